from __future__ import annotations

import pytest

from slimformer.supernet import SearchSpace

FAST = {"repeats": 3, "op_repeats": 3, "min_time_s": 0.0, "retries": 0, "calibration": 3}


def micro_space() -> SearchSpace:
    """19 ops: one width per stage, two MLP ratios, one MB3D shape; every op kind but the token downsample."""
    return SearchSpace(stage_widths=((16,), (32,), (48,), (64,)), depths=(1, 1, 1, 2), stem_widths=(8,),
                       mb3d_stages=(3,), mlp_ratios=(1.0, 2.0), heads=(1,), qk_dims=(8,), v_dims=(16,),
                       img_size=32, num_classes=10, name="micro")


@pytest.fixture
def micro():
    return micro_space()


@pytest.fixture(scope="session")
def micro_table(tmp_path_factory):
    """A measured table of the micro space (built once per session, fast settings)."""
    from slimformer.latency_lut import build_table

    d = tmp_path_factory.mktemp("luts")
    return build_table(name="micro-ort", space=micro_space(), lut_dir=d, progress=False, **FAST)
