"""pip install --no-build-isolation ./python: the nuq package with its _nuq module built by CMake.

Works offline with Debian's setuptools and wheel: the extension is built by the project's own
CMake (the static library linked in, as in every build) rather than by setuptools' compiler
calls. NUQ_BUILD_DIR, an absolute path, picks the CMake build folder (default: build-pip at the
repository root, configured here and reused by later installs; NUQ_CUDA, AUTO, ON or OFF, is
passed on). A folder
NUQ_BUILD_DIR names that is already configured, scripts/build's say, is built as it was configured
(its module is then up to date, and nothing is compiled again): it must build the module (NUQ_PYTHON
not OFF), for the Python that runs pip.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
# The project's one version, as CMake's project() gives it to `nuq --version` and nuq.__version__.
VERSION = re.search(r"project\(nuq VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text()).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        named = os.environ.get("NUQ_BUILD_DIR")
        if named and not os.path.isabs(named):
            # pip runs this file from python/, not from where it was called: a relative path would
            # land somewhere the caller did not mean (python/build is setuptools' own folder).
            sys.exit(f"NUQ_BUILD_DIR={named}: give an absolute path (pip runs setup.py from {HERE})")
        build_dir = pathlib.Path(named or ROOT / "build-pip").resolve()
        cache = build_dir / "CMakeCache.txt"
        if named and cache.exists():
            # Someone else's folder: its options stay as they are (reconfiguring scripts/build's
            # folder without tests would drop them), but it must build the module.
            if "NUQ_PYTHON:STRING=OFF" in cache.read_text(errors="replace"):
                sys.exit(f"NUQ_BUILD_DIR={build_dir} was configured with NUQ_PYTHON=OFF, so it has no Python module "
                         "to install: configure it with -DNUQ_PYTHON=ON, or name a new folder")
        else:
            subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                            "-DNUQ_PYTHON=ON", "-DNUQ_BUILD_TESTS=OFF", "-DNUQ_BUILD_BENCH=OFF",
                            f"-DNUQ_CUDA={os.environ.get('NUQ_CUDA', 'AUTO')}",
                            f"-DPython_EXECUTABLE={sys.executable}"],
                           check=True)
        built = subprocess.run(["cmake", "--build", str(build_dir), "--target", "_nuq", "-j", str(os.cpu_count() or 1)])
        if built.returncode != 0:
            sys.exit(f"building the module (target _nuq) in {build_dir} failed (above); a folder configured "
                     "without Python's headers or pybind11 has no such target")
        package_dir = build_dir / "python" / "nuq"
        built = package_dir / ("_nuq" + sysconfig.get_config_var("EXT_SUFFIX"))
        if not built.exists():
            found = sorted(p.name for p in package_dir.glob("_nuq*.so"))
            sys.exit(f"{build_dir} holds no module for this Python ({built.name}; found: {', '.join(found) or 'none'}): "
                     "it was configured for another one; name a new folder in NUQ_BUILD_DIR")
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(
    name="nuq",
    version=VERSION,
    description="Post-training quantization of neural-network weights (SPTQ, MSPTQ, uniform, ...) over the nuq library",
    packages=["nuq"],
    package_data={"nuq": ["*.pyi", "py.typed"]},
    ext_modules=[Extension("nuq._nuq", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.8",
    install_requires=["numpy"],
)
