"""Framework helpers: schedulers, config-driven instantiation and entry-point plumbing."""

from mobilevit.utils.instantiators import instantiate_callbacks, instantiate_loggers, instantiate_optional
from mobilevit.utils.lr_scheduler import WarmupDecayLR
from mobilevit.utils.precision import cpu_supports_bf16, fast_precision
from mobilevit.utils.run import (
    ddp_children_share_dirs,
    display_path,
    exit_on_user_error,
    find_user_error,
    register_config_resolvers,
    resolve_ckpt_path,
    resolved_config,
    set_project_root,
    silence_upstream_warnings,
    warn_renamed_options,
)

__all__ = [
    "WarmupDecayLR",
    "cpu_supports_bf16",
    "ddp_children_share_dirs",
    "display_path",
    "exit_on_user_error",
    "fast_precision",
    "find_user_error",
    "instantiate_callbacks",
    "instantiate_loggers",
    "instantiate_optional",
    "register_config_resolvers",
    "resolve_ckpt_path",
    "resolved_config",
    "set_project_root",
    "silence_upstream_warnings",
    "warn_renamed_options",
]
