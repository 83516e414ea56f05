// ofa-edge firmware: the model, its op resolver and a static arena (written for ofa-edge).
#include "ofa_model.h"

#include <new>

#include "ofa_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" const unsigned char ofa_model_data[];

namespace {
alignas(16) uint8_t tensor_arena[OFA_ARENA_BYTES] __attribute__((section(".bss.ofa_arena")));
alignas(OfaOpResolver) uint8_t resolver_storage[sizeof(OfaOpResolver)];
alignas(tflite::MicroInterpreter) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter* interpreter = nullptr;
}  // namespace

int ofa_model_init_profiled(tflite::MicroProfilerInterface* profiler) {
  const tflite::Model* model = tflite::GetModel(ofa_model_data);
  if (model->version() != TFLITE_SCHEMA_VERSION) return 1;
  OfaOpResolver* resolver = new (resolver_storage) OfaOpResolver();
  if (ofa_add_ops(*resolver) != kTfLiteOk) return 2;
  interpreter = new (interpreter_storage)
      tflite::MicroInterpreter(model, *resolver, tensor_arena, OFA_ARENA_BYTES, nullptr, profiler);
  if (interpreter->AllocateTensors() != kTfLiteOk) return 3;
  return 0;
}

extern "C" int ofa_model_init(void) { return ofa_model_init_profiled(nullptr); }

extern "C" int8_t* ofa_model_input(size_t* bytes) {
  TfLiteTensor* t = interpreter->input(0);
  if (bytes) *bytes = t->bytes;
  return t->data.int8;
}

extern "C" const int8_t* ofa_model_output(size_t* bytes) {
  TfLiteTensor* t = interpreter->output(0);
  if (bytes) *bytes = t->bytes;
  return t->data.int8;
}

extern "C" int ofa_model_invoke(void) { return interpreter->Invoke() == kTfLiteOk ? 0 : 1; }

extern "C" size_t ofa_model_arena_used(void) { return interpreter->arena_used_bytes(); }
