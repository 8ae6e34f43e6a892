"""latprof's own Triton kernels.  Each kernel module holds its `@triton.jit` kernels, their
launchers and the documented public functions, and offers a PyTorch reference `<name>_ref` with
the same parameters, defined in the module or re-exported from `latprof.ops.ssm_reference` (the
reference the blocks' torch backend runs):

- `decode_attention`: GQA decode attention with fused RoPE + KV-cache write, split-KV; defines its
  reference `decode_attention_ref` (with the helper `rotate_half_rope`) itself;
- `mamba_step`: `causal_conv1d_update`, `selective_state_update` (Mamba-1); re-exports
  `causal_conv1d_update_ref`, `selective_state_update_ref`;
- `mamba2_step`: `mamba2_state_update`, conv + SSD state update fused in one kernel (Mamba2);
  re-exports `mamba2_state_update_ref`;
- `gated_rms_norm`: group RMSNorm of x * silu(z) (Mamba2's output norm); re-exports
  `gated_rms_norm_ref`.

Two helper modules are shared by the kernel modules and hold no kernel of their own:

- `checks`: host-side argument checks, `require` (ValueError unless a condition holds) and
  `check_same_device`;
- `conv_window`: `shifted_conv_window`, the `@triton.jit` depthwise causal-conv window of one
  decode step, used by `mamba_step` and `mamba2_step`.

Import the module you need (`from latprof.kernels.decode_attention import decode_attention`);
importing this package imports nothing, so it never pulls in triton.  On CPU the kernels run only
under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported).
"""
