#!/usr/bin/env python3
"""scripts/plots.py renders every figure of the report from small fixtures (tests/fixtures/figures,
tests/fixtures/bench) into PNGs that are really pictures: the expected size and many colours.
Exit 77 (ctest: skipped) when matplotlib is missing; scripts/setup installs it."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

try:
    import matplotlib.image as mpimg
except ImportError:
    print("matplotlib is not installed (Debian: python3-matplotlib); skipping", file=sys.stderr)
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLOTS = os.path.join(ROOT, "scripts", "plots.py")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
EXPECTED = ["fig2-transfer", "fig5-convergence", "fig6-distortion", "sqnr-vs-xmax", "histogram-mnist-mlp",
            "accuracy-vs-xmax", "mismatch-uniform", "itc2021-rate", "bench-speedup"]


def plots(*args):
    return subprocess.run([sys.executable, PLOTS, *args], capture_output=True, text=True, timeout=300)


class RendersEveryFigure(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="nuq-plots-")
        for name in os.listdir(os.path.join(FIXTURES, "figures")):
            shutil.copy(os.path.join(FIXTURES, "figures", name), cls.dir)
        cls.result = plots(cls.dir, "--bench", os.path.join(FIXTURES, "bench"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def test_exits_cleanly(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)

    def test_each_png_is_a_real_picture(self):
        for stem in EXPECTED:
            with self.subTest(figure=stem):
                path = os.path.join(self.dir, stem + ".png")
                self.assertTrue(os.path.exists(path), f"{stem}.png missing; stderr: {self.result.stderr}")
                image = mpimg.imread(path)
                height, width = image.shape[:2]
                self.assertGreaterEqual(width, 800)
                self.assertGreaterEqual(height, 500)
                pixels = image.reshape(-1, image.shape[2])[:, :3]
                colours = {tuple(p) for p in pixels[:: max(1, len(pixels) // 20000)]}
                self.assertGreater(len(colours), 20, "a figure of one or two flat colours is empty")
                # Not mostly blank: at least 3 % of the pixels are not the white background.
                ink = (pixels.sum(axis=1) < 2.9).mean()
                self.assertGreater(ink, 0.03)

    def test_no_temporary_files_left(self):
        self.assertEqual([n for n in os.listdir(self.dir) if ".tmp" in n], [])


class RejectsBadData(unittest.TestCase):
    def test_a_malformed_file_is_named(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "fig2-transfer.csv"), "w") as f:
                f.write("x,sptq,msptq\n0.5,not-a-number,1\n")
            result = plots(d)
            self.assertEqual(result.returncode, 2)
            self.assertIn("fig2-transfer.csv", result.stderr)
            self.assertIn("sptq", result.stderr)
            self.assertFalse(os.path.exists(os.path.join(d, "fig2-transfer.png")))

    def test_a_missing_folder_is_an_error(self):
        result = plots("/nonexistent/nuq-figures")
        self.assertEqual(result.returncode, 2)
        self.assertIn("not a folder", result.stderr)


if __name__ == "__main__":
    unittest.main()
