/* The .tflite, embedded in flash 16-byte aligned (TFLite Micro reads it in place). */
  .section .rodata.ofa_model, "a"
  .balign 16
  .global ofa_model_data
ofa_model_data:
  .incbin OFA_MODEL_FILE
  .global ofa_model_end
ofa_model_end:
