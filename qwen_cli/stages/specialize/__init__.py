"""``qwen specialize code|math`` as one package: ``recipe`` plans the stages, ``datasets`` builds and
decontaminates the data, ``evaluate`` measures the result, ``stage`` runs it all."""

from qwen_cli.stages.specialize.stage import STAGE_CLASSES, specialize

__all__ = ["STAGE_CLASSES", "specialize"]
