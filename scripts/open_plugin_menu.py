"""Open every dock widget of the plugin from napari's Plugins menu, as a person does.

Run under a display, e.g. ``xvfb-run -a python scripts/open_plugin_menu.py``. Starts napari,
clicks Plugins > napari-omniseg > <widget> for every widget the installed manifest declares,
and exits 0 only if each one docked. Prints one line per widget.
"""

from __future__ import annotations

import sys

PLUGIN = "napari-omniseg"


def menu_actions(viewer) -> dict:
    """The plugin's entries of the Plugins menu, by their text."""
    for action in viewer.window.plugins_menu.actions():
        if action.menu() is not None and action.text() == PLUGIN:
            return {a.text(): a for a in action.menu().actions()}
    return {}


def main() -> int:
    import napari
    import npe2
    from qtpy.QtWidgets import QApplication

    names = [w.display_name for w in
             npe2.PluginManifest.from_distribution(PLUGIN).contributions.widgets or []]
    viewer = napari.Viewer(show=True)
    actions = menu_actions(viewer)
    failed = 0
    for name in names:
        if name not in actions:
            print(f"FAIL {name}: not in Plugins > {PLUGIN}")
            failed += 1
            continue
        actions[name].trigger()
        QApplication.processEvents()
        widget = viewer.window.dock_widgets.get(f"{name} ({PLUGIN})")
        if widget is None:
            print(f"FAIL {name}: clicking the menu entry docked nothing (see the error above)")
            failed += 1
        else:
            print(f"ok   {name}: {type(widget).__name__} docked")
    viewer.close()
    print(f"{len(names) - failed} of {len(names)} widgets opened from the Plugins menu")
    return 1 if failed or not names else 0


if __name__ == "__main__":
    sys.exit(main())
