"""The Redis store's Lua scripts ship as package data beside the module."""

from importlib import resources

from taskloom.store.redis import SCRIPT_NAMES, lua_scripts


def test_every_packaged_script_is_loaded_with_the_prelude() -> None:
    folder = resources.files("taskloom.store").joinpath("lua")
    on_disk = {entry.name[:-4] for entry in folder.iterdir() if entry.name.endswith(".lua")}
    assert on_disk == {*SCRIPT_NAMES, "prelude"}
    prelude = folder.joinpath("prelude.lua").read_text(encoding="utf-8")
    scripts = lua_scripts()
    assert set(scripts) == set(SCRIPT_NAMES)
    assert all(body.startswith(prelude) and len(body) > len(prelude) for body in scripts.values())
