import subprocess
import sys


def test_import_is_light_and_starts_nothing():
    code = (
        "import sys, threading, wattlm\n"
        "heavy = [m for m in ('torch', 'pynvml', 'amdsmi', 'typer', 'rich', 'transformers') if m in sys.modules]\n"
        "print(heavy, threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] 1"


def test_public_names_resolve_lazily():
    import wattlm

    assert wattlm.EnergyMeter.__name__ == "EnergyMeter"
    assert wattlm.Measurement.__name__ == "Measurement"
