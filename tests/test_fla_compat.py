"""fla_compat checks that fla's entry points declare the keyword arguments latprof passes."""

from __future__ import annotations

import pytest

from latprof.errors import BackendUnavailable
from latprof.ops import fla_compat


def _kernels(**replace):
    def ok_delta(q, k, v, beta=None, scale=None, initial_state=None, output_final_state=False,
                 use_qk_l2norm_in_kernel=False, cu_seqlens=None): ...  # fmt: skip

    def old_gated(q, k, v, g=None, beta=None, scale=None, initial_state=None,
                  output_final_state=False, **kwargs): ...  # fmt: skip

    def ok_gla(q, k, v, gk=None, scale=None, initial_state=None, output_final_state=False): ...

    def ok_kda(q, k, v, g, beta, A_log=None, dt_bias=None, scale=None, initial_state=None,
               output_final_state=False, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
               use_beta_sigmoid_in_kernel=False, **kwargs): ...  # fmt: skip

    def ok_conv(x, cache, residual=None, weight=None, bias=None, activation=None): ...

    fns = dict(delta_rule=ok_delta, gated_delta_rule=old_gated, gla=ok_gla, kda=ok_kda,
               conv_update=ok_conv)  # fmt: skip
    fns.update(replace)
    return fla_compat.FlaKernels(**fns)


def test_a_keyword_swallowed_by_kwargs_is_named_with_the_version_needed():
    with pytest.raises(BackendUnavailable) as err:
        fla_compat.check_signatures(_kernels(), "0.4.1")
    text = str(err.value)
    assert "fla-core 0.4.1" in text and "'use_gate_in_kernel'" in text
    assert "'A_log'" in text and f">= {fla_compat.FLA_VERSION_NEEDED}" in text


def test_the_installed_fla_declares_every_keyword():
    pytest.importorskip("fla")
    fla_compat.check_signatures(fla_compat.fla_kernels(), fla_compat._installed_version())
