"""`omniseg blocks from-masks` and `omniseg finetune` on the block manifest it writes."""

import json

from conftest import tiny_renal_checkpoint
from test_cli_finetune import write_manifest

from napari_omniseg.checkpoints import read_metadata
from napari_omniseg.cli import main


def test_blocks_from_masks_then_finetune_on_them(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    out_dir = tmp_path / "blocks"
    assert main(["blocks", "from-masks", "--manifest", str(manifest), "--block-size", "64",
                 "--bins", "3", "-o", str(out_dir)]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["manifest"].endswith("manifest.csv") and (out_dir / "table.csv").exists()
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    out = tmp_path / "b.pt"
    assert main(["finetune", "--manifest", str(out_dir / "manifest.csv"), "--block-table",
                 str(out_dir / "table.csv"), "--base", str(base), "--minutes", "0.2",
                 "--block-loss", "intra", "--block-distance", "paper", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] > 0 and {r["tissue"] for r in summary["fit"]} == {"ptc"}
    meta = read_metadata(out)
    assert meta["block_labels"]["images"] == 3  # the train rows only; val rows never
    assert meta["block_labels"]["options"]["loss"] == "intra"
    assert meta["block_labels"]["labelled_blocks"] == 3 * 16


def test_block_label_mistakes_are_one_sentence(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    out_dir = tmp_path / "blocks"
    assert main(["blocks", "from-masks", "--manifest", str(manifest), "--block-size", "100",
                 "-o", str(out_dir)]) == 2
    assert "block size 100 does not divide" in capsys.readouterr().err
    main(["blocks", "from-masks", "--manifest", str(manifest), "-o", str(out_dir)])
    capsys.readouterr()
    for extra, said in (([], "give their table with --block-table"),
                        (["--block-table", str(out_dir / "table.csv"), "--semi"],
                         "--semi applies to pixel-mask manifests"),
                        (["--block-table", str(out_dir / "table.csv"), "--keep-start", "0.5"],
                         "--keep-start applies to fine-tuning on masks")):
        assert main(["finetune", "--manifest", str(out_dir / "manifest.csv"), *extra, "-o",
                     str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1
    assert main(["finetune", "--manifest", str(manifest), "--block-table",
                 str(out_dir / "table.csv"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "needs a manifest with a 'blocks' column" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
