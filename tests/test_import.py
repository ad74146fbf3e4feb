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
