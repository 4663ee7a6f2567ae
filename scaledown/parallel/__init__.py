# The one tensor/pipeline-parallel plan of the ScaleDown model (NxD layouts), shared by the NxD backend and converters.
from scaledown.parallel.layout import AttentionGeometry, Layout
from scaledown.parallel.plan import LocalAttention, ParallelPlan, ParamPlan, default_kv_replication
from scaledown.parallel.rules import ModuleSpec

__all__ = ["AttentionGeometry", "Layout", "LocalAttention", "ModuleSpec", "ParallelPlan", "ParamPlan",
           "default_kv_replication"]
