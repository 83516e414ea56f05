// ofa-edge deployment image: no stdio, no heap. Replace main with your application; keep the
// ofa_model_* calls (ofa_model.h). TFLite Micro's log lines go to ofa_debug_log, a no-op unless
// you define it (for example to write to a UART).
#include <cstdarg>
#include <cstring>

#include "ofa_model.h"

extern "C" __attribute__((weak)) void ofa_debug_log(const char* format, va_list args) {
  (void)format;
  (void)args;
}

extern "C" void DebugLog(const char* format, va_list args) { ofa_debug_log(format, args); }

extern "C" int DebugVsnprintf(char* buffer, size_t buf_size, const char* format, va_list vlist) {
  (void)format;
  (void)vlist;
  if (buf_size) buffer[0] = '\0';
  return 0;
}

int main(void) {
  if (ofa_model_init() != 0) {
    for (;;) {
    }
  }
  size_t bytes = 0;
  std::memset(ofa_model_input(&bytes), 0, bytes);
  ofa_model_invoke();
  for (;;) {
    __asm volatile("wfi");
  }
}
