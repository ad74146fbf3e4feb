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
    assert set(gdino.PRESETS) == {"swin_t", "swin_b", "tiny", "mm_swin_t", "mm_swin_b", "mm_swin_l"}


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
    # the canvas' JS and CSS are read at import: a wheel without them would fail to start the app
    assets = [p.name for p in (root / "ui" / "canvas").iterdir() if p.is_file() and p.suffix != ".py"]
    canvas_patterns = setup["package-data"]["ui.canvas"]
    assert assets and all(any(fnmatch.fnmatch(name, pat) for pat in canvas_patterns) for name in assets), assets


TORCH_FREE = ["gdino", "gdino.store", "gdino.formats", "gdino.labeling", "gdino.labeling.inputs", "gdino.masks",
              "gdino.safezip", "gdino.processing", "gdino.prompts", "gdino.store.schema"]


def test_the_data_side_of_the_package_does_not_import_torch():
    """`gdino --help`, the exporters and the project store must not pay torch's seconds of import."""
    code = f"import sys\nimport {', '.join(TORCH_FREE)}\n" \
           "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'transformers'))\n" \
           "print(heavy[:5])\nsys.exit(1 if heavy else 0)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_is_there_on_first_use():
    """The package imports its parts when a name is first used; each name of __all__ resolves to the object
    its module defines, `from gdino import X` works, and dir() lists them."""
    code = (
        "import sys, gdino\n"
        "from gdino import Detector, load_model, Segmenter\n"
        "import gdino.detector, gdino.weights.hub, gdino.sam.segmenter, gdino.modeling.config, gdino.store, gdino.modeling\n"
        "assert Detector is gdino.detector.Detector and load_model is gdino.weights.hub.load_model\n"
        "assert Segmenter is gdino.sam.segmenter.Segmenter and gdino.preset is gdino.modeling.config.preset\n"
        "assert gdino.Project is gdino.store.Project and gdino.GroundingDINO is gdino.modeling.GroundingDINO\n"
        "assert issubclass(gdino.ImageError, ValueError) and issubclass(gdino.SegmenterError, ValueError)\n"
        "missing = [n for n in gdino.__all__ if getattr(gdino, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert set(gdino.__all__) <= set(dir(gdino)), set(gdino.__all__) - set(dir(gdino))\n"
        "assert gdino.__version__\n"
        "try:\n"
        "    gdino.no_such_name\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_name' in str(err)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    import gdino

    assert {"Detector", "Segmenter", "load_model", "Project", "preset"} <= set(gdino.__all__)
