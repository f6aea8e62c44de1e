"""The training config (`python -m jaxslm.train --config FILE section.key=value ...`): one
frozen dataclass per YAML section, with every key and its default.

- jaxslm.config.model_section: `model` (presets, shape keys, numerics);
- jaxslm.config.sections: `vocab`, `data`, `optimizer`, `schedule`, `mesh`, `checkpoint`,
  `logging`, `eval`, `budget`;
- jaxslm.config.dpo_section: `objective` and `dpo` (preference alignment);
- jaxslm.config.train_config: `TrainConfig`, the whole;
- jaxslm.config.loading: `load_config`, `dump_config`, `config_to_dict`.
"""

from jaxslm.config.loading import config_to_dict, dump_config, load_config
from jaxslm.config.model_section import ModelSection
from jaxslm.config.sections import (
    BudgetSection,
    CheckpointSection,
    DataSection,
    EvalSection,
    LoggingSection,
    MeshSection,
    OptimizerSection,
    ScheduleSection,
    VocabSection,
)
from jaxslm.config.train_config import TrainConfig

__all__ = [
    "BudgetSection",
    "CheckpointSection",
    "DataSection",
    "EvalSection",
    "LoggingSection",
    "MeshSection",
    "ModelSection",
    "OptimizerSection",
    "ScheduleSection",
    "TrainConfig",
    "VocabSection",
    "config_to_dict",
    "dump_config",
    "load_config",
]
