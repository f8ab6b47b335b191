import dataclasses

import pytest

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.tasks import TASKS, task, task_of_manifest, task_of_model
from napari_omniseg.train.task_functions import FUNCTIONS, TaskFunctions, functions_of


@pytest.mark.parametrize("name", TASKS)
def test_every_task_has_its_training_functions(name):
    functions = functions_of(task(name))
    assert isinstance(functions, TaskFunctions)
    assert all(callable(getattr(functions, f.name)) for f in dataclasses.fields(functions))


def test_the_functions_name_no_task_the_registry_lacks():
    assert set(FUNCTIONS) == set(TASKS)


def test_a_model_is_known_by_what_it_answers():
    from napari_omniseg.nets.conemos import CoNeMOS
    from napari_omniseg.nets.omniseg import OmniSegPlus

    assert task_of_model(OmniSegPlus(width=0.25)).name == "renal"
    assert task_of_model(CoNeMOS()).name == "fetal"
    assert task_of_model(object()) is None


def test_a_manifest_is_known_by_its_columns(tmp_path):
    kidney = tmp_path / "k.csv"
    kidney.write_text("image,mask,tissue,stain,magnification\n")
    volumes = tmp_path / "v.csv"
    volumes.write_text("image,mask,region\n")
    assert task_of_manifest(kidney).name == "renal"
    assert task_of_manifest(volumes).name == "fetal"
    with pytest.raises(OmnisegInputError, match="does not exist"):
        task_of_manifest(tmp_path / "missing.csv")
    with pytest.raises(OmnisegInputError, match="unknown task 'eye'"):
        task("eye")


def test_semi_supervision_is_refused_where_the_task_has_none():
    with pytest.raises(OmnisegInputError, match="kidney patches"):
        functions_of(task("fetal")).finetune(None, [], semi_supervised=True)
