#!/usr/bin/env python3
"""The README's install, as a user runs it: a venv on the system Python, then
`pip install --no-build-isolation --no-index ./python`, offline. NUQ_BUILD_DIR names the build
folder this test runs from, so setup.py builds the module as that folder is configured (up to
date, so nothing compiles) instead of configuring build-pip/ and compiling everything again.

usage: pip_install.py SOURCE_PYTHON_DIR BUILD_DIR NUQ_BINARY

Checks, from a folder outside the repository and with no PYTHONPATH:
- `import nuq` finds the venv's copy, with its module, stub and py.typed;
- the installed module designs what `nuq design --json` prints, to the last digit, and quantizes;
- its nuq.__version__, pip's record of it (setup.py's) and `nuq --version` say the same version;
- setup.py refuses, with a message, a relative NUQ_BUILD_DIR and a folder configured without the
  Python module.
Exit 0: all pass; 1: a failure; 77: this Python cannot make a venv with pip or lacks setuptools.
(Not collected by pytest: the name does not start with test_.)
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def fail(message, result=None):
    print(f"FAIL: {message}", file=sys.stderr)
    if result is not None:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
    sys.exit(1)


def main():
    source, build_dir, nuq_binary = (pathlib.Path(a).resolve() for a in sys.argv[1:4])
    for module in ("ensurepip", "setuptools", "wheel"):
        if run([sys.executable, "-c", f"import {module}"]).returncode != 0:
            print(f"{sys.executable} has no {module}: skipped", file=sys.stderr)
            sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="nuq-pip-") as scratch:
        scratch = pathlib.Path(scratch)
        venv = scratch / "venv"
        made = run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
        if made.returncode != 0:
            fail("python3 -m venv", made)
        python = venv / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUQ_BUILD_DIR")}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")
        pip = [str(python), "-m", "pip", "install", "--no-build-isolation", "--no-index", str(source)]

        # Two mistakes, each refused with its reason before anything is built.
        relative = run(pip, env=dict(env, NUQ_BUILD_DIR="build"))
        if relative.returncode == 0 or "give an absolute path" not in relative.stdout + relative.stderr:
            fail("a relative NUQ_BUILD_DIR was not refused with its reason", relative)
        no_module = scratch / "configured-without-python"
        no_module.mkdir()
        (no_module / "CMakeCache.txt").write_text("NUQ_PYTHON:STRING=OFF\n")
        refused = run(pip, env=dict(env, NUQ_BUILD_DIR=str(no_module)))
        if refused.returncode == 0 or "configured with NUQ_PYTHON=OFF" not in refused.stdout + refused.stderr:
            fail("a folder configured without the module was not refused with its reason", refused)
        if list(no_module.iterdir()) != [no_module / "CMakeCache.txt"]:
            fail("the refused folder was written to")

        installed = run(pip, env=dict(env, NUQ_BUILD_DIR=str(build_dir)))
        if installed.returncode != 0:
            fail("pip install", installed)

        elsewhere = scratch / "elsewhere"
        elsewhere.mkdir()
        probe = run([str(python), "-c", """
import json, os, importlib.metadata, numpy as np, nuq
package = os.path.dirname(nuq.__file__)
c = nuq.design("msptq", 2)
w = np.random.default_rng(5).laplace(size=(64, 96)).astype(np.float32)
q = nuq.quantize(w, c)
print(json.dumps({"package": package, "files": sorted(os.listdir(package)), "sqnr_db": c.sqnr_db,
                  "levels": list(c.levels), "restored_shape": list(q.dequantize().shape),
                  "sqnr_ex_db": q.sqnr_ex_db, "version": nuq.__version__,
                  "installed_version": importlib.metadata.version("nuq")}))
"""], cwd=elsewhere, env=env)
        if probe.returncode != 0:
            fail("import nuq from the venv", probe)
        found = json.loads(probe.stdout)
        if not pathlib.Path(found["package"]).is_relative_to(venv):
            fail(f"nuq was imported from {found['package']}, not from the venv")
        for name in ("__init__.py", "__init__.pyi", "py.typed", "nn.py"):
            if name not in found["files"]:
                fail(f"the installed package lacks {name}: {found['files']}")
        if not any(f.startswith("_nuq") and f.endswith(".so") for f in found["files"]):
            fail(f"the installed package lacks its module: {found['files']}")

        cli = run([str(nuq_binary), "design", "--method", "msptq", "--json"])
        if cli.returncode != 0:
            fail("nuq design", cli)
        design = json.loads(cli.stdout)
        if found["sqnr_db"] != design["sqnr_db"] or found["levels"] != design["codebook"]["levels"]:
            fail(f"the installed module designs {found['sqnr_db']} dB {found['levels']}, nuq design "
                 f"{design['sqnr_db']} dB {design['codebook']['levels']}")
        cli_version = run([str(nuq_binary), "--version"]).stdout.strip()
        if not (cli_version == "nuq " + found["version"] == "nuq " + found["installed_version"]):
            fail(f"versions differ: `nuq --version` {cli_version!r}, nuq.__version__ {found['version']!r}, "
                 f"pip's {found['installed_version']!r}")
        if found["restored_shape"] != [64, 96] or not 5.0 < found["sqnr_ex_db"] < 9.0:
            fail(f"quantizing a Laplacian array through the installed module: {found}")
    print(f"pip installed nuq into a venv from {build_dir}; it imports and designs as nuq does")


if __name__ == "__main__":
    main()
