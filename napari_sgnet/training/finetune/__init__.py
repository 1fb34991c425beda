"""Fine-tuning a model on a pathologist's committed corrections.

- :mod:`.run`: :func:`~.run.finetune`, the one entry point (CLI, dock, bench);
- :mod:`.config`: its frozen configuration, progress and result;
- :mod:`.corrections`, :mod:`.store_corrections`, :mod:`.patch_corrections`,
  :mod:`.correction_types`: where the corrections come from;
- :mod:`.splits`, :mod:`.region_sampler`: the by-region held-out split and its sampler;
- :mod:`.prepare`, :mod:`.evaluate`, :mod:`.bn_recalibrate`: parent model, held-out scoring,
  batch-norm recalibration.
"""
