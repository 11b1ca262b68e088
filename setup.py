"""MAQ: memory-aligned 2/8-bit mixed-precision quantization for Llama-family models.

The C kernels are built through cffi (API mode): runtime/_build.py defines ``ffibuilder``.
Import names: ``maq`` (public API), ``maq.runtime`` <- runtime/, ``maq.converter`` <- converter/,
``maq.evaluation`` <- evaluation/. ``pip install .`` and ``pip install -e .`` both give every ``maq`` subcommand.
"""
from setuptools import setup

setup(
    name="maq",
    version="0.1.0",
    description="Memory-aligned mixed-precision (2/8-bit) quantization and a CPU runtime for Llama-family models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["maq", "maq.runtime", "maq.converter", "maq.evaluation"],
    package_dir={"maq": "maq", "maq.runtime": "runtime", "maq.converter": "converter",
                 "maq.evaluation": "evaluation"},
    package_data={"maq.runtime": ["csrc/*.c", "csrc/*.h", "static/*.html"], "maq.converter": ["data/*"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["runtime/_build.py:ffibuilder"],
    install_requires=[
        "numpy>=1.24",
        "cffi>=1.15",
        "gguf>=0.10",
        "tokenizers>=0.15",
        "jinja2>=3.0",
        "tqdm>=4.60",
    ],
    extras_require={
        # torch: install the CPU build explicitly (`pip install torch==2.13.0`) before this extra.
        "convert": ["torch>=2.1", "transformers>=4.40", "safetensors>=0.4"],
        "dev": ["pytest>=7", "transformers>=4.40", "safetensors>=0.4", "matplotlib>=3.5", "openai>=1.30",
                "selenium>=4.10"],
        # `maq serve` and constrained output (llguidance: wheels for x86_64 and aarch64)
        "server": ["starlette>=0.37", "uvicorn>=0.29", "sse-starlette>=2.0", "llguidance>=0.7"],
    },
    entry_points={"console_scripts": ["maq=maq.cli:main"]},
    zip_safe=False,
)
