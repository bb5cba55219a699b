"""Deprecated: knowledge distillation (teacher, loss) is in `gpunet.train.distill`."""

from gpunet._deprecation import moved

__getattr__ = moved(__name__, {
    **dict.fromkeys(("is_gpunet_teacher", "build_teacher", "freeze", "teacher_data_config", "resize_for_student",
                     "kd_loss"), "gpunet.train.distill"),
    "TeacherError": "gpunet.errors",
})
