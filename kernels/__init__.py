"""latprof's own Triton kernels, each module holding kernel, launcher, public function and a
PyTorch reference `<name>_ref` with the same signature:

- `decode_attention`: GQA decode attention with fused RoPE + KV-cache write, split-KV;
- `mamba_step`: `causal_conv1d_update`, `selective_state_update` (Mamba-1);
- `mamba2_step`: `mamba2_state_update`, conv + SSD state update fused in one kernel (Mamba2);
- `gated_rms_norm`: group RMSNorm of x * silu(z) (Mamba2's output norm).

Import the module you need (`from latprof.kernels.decode_attention import decode_attention`);
importing this package imports nothing, so it never pulls in triton.  On CPU the kernels run only
under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported).
"""
