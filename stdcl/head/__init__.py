"""STD-CL: the decoupling head, the memory banks, the contrastive loss and the training-time model."""

from stdcl.head.banks import ClassQueueBank, PerSampleBank, gather_for_bank
from stdcl.head.decoupling import DecouplingHead
from stdcl.head.loss import (FeasibilityReport, STDCLLoss, check_feasibility, hard_mined_infonce, l2_normalize,
                             scaled_pos_neg)
from stdcl.head.model import STDCLModel, build_stdcl_model
from stdcl.head.sampling import draw_random_negatives

__all__ = ["ClassQueueBank", "DecouplingHead", "FeasibilityReport", "PerSampleBank", "STDCLLoss", "STDCLModel",
           "build_stdcl_model", "check_feasibility", "draw_random_negatives", "gather_for_bank",
           "hard_mined_infonce", "l2_normalize", "scaled_pos_neg"]
