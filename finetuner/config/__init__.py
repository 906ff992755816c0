"""RunConfig: one YAML file describes a whole run (DESIGN.md, joint 1).

    cfg = load_config("run.yaml")          # or from_dict(plain_data); both validate
    save_config(cfg, "runs/x/config.yaml")

fields.py is the schema (sections as dataclasses, one help text per field in its metadata, which feeds the
UI's tooltips, `python -m finetuner explain` and README's reference); validate.py checks every field's rule and
the combinations; load.py builds configs from plain data and YAML and writes them back. This module only names
what the rest of the engine uses.
"""

from finetuner.config.fields import (METHODS, AdapterConfig, DataConfig, EvalConfig, ModelConfig, RFTConfig,
                                     RunConfig, SFTConfig, TrainConfig, explain, help_for, iter_fields)
from finetuner.config.load import (dump_yaml, from_dict, load_config, portable_config, save_config, to_dict,
                                   yaml_text)
from finetuner.config.validate import validate

__all__ = ["METHODS", "AdapterConfig", "DataConfig", "EvalConfig", "ModelConfig", "RFTConfig", "RunConfig",
           "SFTConfig", "TrainConfig", "explain", "help_for", "iter_fields", "dump_yaml", "from_dict",
           "load_config", "portable_config", "save_config", "to_dict", "yaml_text", "validate"]
