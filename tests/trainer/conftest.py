import pytest

from trainer.learning.synthetic_dataset import generate


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A tiny procedural dataset in MVTec layout: 2 products, 64 px."""
    return generate(
        tmp_path_factory.mktemp("line"),
        products=("washer", "tile"),
        size=64,
        train=10,
        test_good=3,
        test_per_defect=2,
        seed=1,
    )
