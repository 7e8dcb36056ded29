"""Fault injection for crash-safety tests: a real SIGKILL of the stage process at a chosen point of a save.

Put this folder first on PYTHONPATH and set R1_TEST_FAULT:
- `after_save:N`  kill right after checkpoint-N is complete (after every on_save callback, ours included);
- `during_save:N` kill in the middle of writing checkpoint-N (weights and optimizer written; RNG and trainer
  state not yet), as an OOM kill or a preemption would.
Python imports `sitecustomize` at startup, so nothing in the project knows about this.
"""

import os
import signal

_fault = os.environ.get("R1_TEST_FAULT")
if _fault:
    _kind, _step = _fault.split(":")
    _step = int(_step)

    def _die():
        print(f"R1_TEST_FAULT: SIGKILL at {_kind} step {_step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    if _kind == "after_save":
        from transformers.trainer_callback import CallbackHandler

        _on_save = CallbackHandler.on_save

        def on_save(self, args, state, control):
            control = _on_save(self, args, state, control)
            if state.global_step == _step:
                _die()
            return control

        CallbackHandler.on_save = on_save
    elif _kind == "during_save":
        from transformers import Trainer

        _save_rng_state = Trainer._save_rng_state

        def _save_rng_state_then_die(self, output_dir):
            if self.state.global_step == _step:
                _die()
            return _save_rng_state(self, output_dir)

        Trainer._save_rng_state = _save_rng_state_then_die
    else:
        raise ValueError(f"R1_TEST_FAULT={_fault!r}: expected after_save:N or during_save:N")
