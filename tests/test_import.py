import subprocess
import sys


def test_import_gdino_pulls_in_neither_gradio_nor_transformers_grounding_dino():
    code = (
        "import sys, gdino\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'gradio' or m.startswith('transformers.models.grounding_dino')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api():
    import gdino

    for name in ("load_model", "GroundingDINO", "GroundingDINOConfig", "preset", "WeightsError"):
        assert hasattr(gdino, name)
    assert set(gdino.PRESETS) == {"swin_t", "swin_b", "tiny"}


def test_the_wheel_lists_every_package_and_kernel_source():
    """pyproject.toml names its packages one by one (csrc/ is mapped in as gdino._csrc): a new subpackage
    or a new kind of kernel source must be added there, or a non-editable install would lack it."""
    import fnmatch
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(root).parts) for top in ("gdino", "ui") for p in (root / top).rglob("__init__.py")}
    assert on_disk | {"gdino._csrc"} == set(setup["packages"])
    assert setup["package-dir"]["gdino._csrc"] == "csrc"
    patterns = setup["package-data"]["gdino._csrc"]
    sources = [p.name for p in (root / "csrc").iterdir() if p.is_file()]
    assert sources and all(any(fnmatch.fnmatch(name, pat) for pat in patterns) for name in sources), sources
