import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic dataset in the real layout, shared by the tests that only read it."""
    from yt8m_engine.io.synth import synth

    out = tmp_path_factory.mktemp("synth")
    synth(str(out), videos=48, shards=2, seed=3)
    return str(out)
