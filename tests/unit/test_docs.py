"""The README's configuration table is the user's reference: it must name every setting."""

from pathlib import Path

from zonepurge.settings import Settings, variable_name

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    missing = [variable_name(name) for name in Settings.model_fields
               if f"| `{variable_name(name)}` |" not in README]
    assert missing == []


def test_the_readme_names_no_setting_that_does_not_exist():
    import re

    named = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    known = {variable_name(name) for name in Settings.model_fields}
    assert named - known == set()
