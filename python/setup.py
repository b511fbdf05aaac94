"""pip install --no-build-isolation ./python: the nuq package with its _nuq module built by CMake.

Works offline with Debian's setuptools and wheel: the extension is built by the project's own
CMake (the static library linked in, as in every build) rather than by setuptools' compiler
calls. NUQ_BUILD_DIR picks the CMake build folder (default: build-pip at the repository root,
reused by later installs); NUQ_CUDA (AUTO, ON, OFF) is passed on.
"""

import glob
import os
import pathlib
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = pathlib.Path(os.environ.get("NUQ_BUILD_DIR", ROOT / "build-pip"))
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                        "-DNUQ_PYTHON=ON", "-DNUQ_BUILD_TESTS=OFF", "-DNUQ_BUILD_BENCH=OFF",
                        f"-DNUQ_CUDA={os.environ.get('NUQ_CUDA', 'AUTO')}", f"-DPython_EXECUTABLE={sys.executable}"],
                       check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_nuq", "-j", str(os.cpu_count() or 1)],
                       check=True)
        (built,) = glob.glob(str(build_dir / "python" / "nuq" / "_nuq*.so"))
        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(
    name="nuq",
    version="0.1.0",
    description="Post-training quantization of neural-network weights (SPTQ, MSPTQ, uniform, ...) over the nuq library",
    packages=["nuq"],
    package_data={"nuq": ["*.pyi", "py.typed"]},
    ext_modules=[Extension("nuq._nuq", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.8",
    install_requires=["numpy"],
)
