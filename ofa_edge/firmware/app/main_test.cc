// ofa-edge test image (semihosting under QEMU): reads input.bin (int8 images back to back),
// writes output.bin (the raw int8 outputs), and prints a report: the arena used, the stack
// high-water mark, and SysTick ticks per op. Under `qemu -icount shift=0` a tick is a fixed
// number of instructions, which the spin loop below measures. Written for ofa-edge.
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "ofa_model.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"

int ofa_model_init_profiled(tflite::MicroProfilerInterface* profiler);

extern "C" uint32_t __stack_limit__, __stack_top__;

namespace {
volatile uint32_t& SYST_CSR = *reinterpret_cast<volatile uint32_t*>(0xE000E010);
volatile uint32_t& SYST_RVR = *reinterpret_cast<volatile uint32_t*>(0xE000E014);
volatile uint32_t& SYST_CVR = *reinterpret_cast<volatile uint32_t*>(0xE000E018);
volatile uint32_t systick_wraps = 0;
constexpr uint32_t kPaint = 0x5A5AA5A5u;
constexpr int kMaxEvents = 512, kMaxOps = 64;

uint64_t ticks() {
  uint32_t wraps, value;
  do {
    wraps = systick_wraps;
    value = SYST_CVR;
  } while (wraps != systick_wraps);
  return static_cast<uint64_t>(wraps) * 0x1000000u + (0xFFFFFFu - value);
}

// Paints the stack below the caller's frame; stack_used() finds the deepest word overwritten.
__attribute__((noinline)) void paint_stack() {
  uint32_t sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t* p = &__stack_limit__; reinterpret_cast<uintptr_t>(p) + 128 < sp; ++p) *p = kPaint;
}

size_t stack_used() {
  uint32_t* p = &__stack_limit__;
  while (p < &__stack_top__ && *p == kPaint) ++p;
  return reinterpret_cast<uintptr_t>(&__stack_top__) - reinterpret_cast<uintptr_t>(p);
}

__attribute__((noinline)) void spin(uint32_t n) {
  __asm volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n));
}

struct OpTotal {
  const char* tag;
  uint64_t ticks;
  uint32_t count;
};

class TickProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (events_ >= kMaxEvents) return kMaxEvents;
    tags_[events_] = tag;
    start_[events_] = ticks();
    return events_++;
  }
  void EndEvent(uint32_t handle) override {
    if (handle >= kMaxEvents) return;
    uint64_t spent = ticks() - start_[handle];
    int i = 0;
    while (i < ops_ && std::strcmp(totals_[i].tag, tags_[handle]) != 0) ++i;
    if (i == ops_) {
      if (ops_ == kMaxOps) return;
      totals_[ops_++] = {tags_[handle], 0, 0};
    }
    totals_[i].ticks += spent;
    totals_[i].count += 1;
  }
  void NewInvoke() { events_ = 0; }
  void Report() const {
    for (int i = 0; i < ops_; ++i)
      std::printf("ofa-firmware op %s %llu %lu\n", totals_[i].tag, static_cast<unsigned long long>(totals_[i].ticks),
                  static_cast<unsigned long>(totals_[i].count));
  }

 private:
  const char* tags_[kMaxEvents];
  uint64_t start_[kMaxEvents];
  uint32_t events_ = 0;
  OpTotal totals_[kMaxOps];
  int ops_ = 0;
};

TickProfiler profiler;
}  // namespace

extern "C" void SysTick_Handler(void) { systick_wraps = systick_wraps + 1; }

extern "C" void ofa_fault(uint32_t exception) {
  std::fprintf(stderr, "ofa-firmware error: the firmware crashed (exception %lu%s)\n",
               static_cast<unsigned long>(exception), exception == 3 ? ", HardFault" : "");
  std::exit(70);
}

int main(void) {
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7;  // processor clock, interrupt on wrap, enabled
  while (SYST_CVR == 0) {
  }  // the first tick loads the reload value
  const uint32_t spin_loops = 1000000;
  uint64_t t0 = ticks();
  spin(spin_loops);
  std::printf("ofa-firmware spin %lu %llu\n", static_cast<unsigned long>(2 * spin_loops),
              static_cast<unsigned long long>(ticks() - t0));

  paint_stack();
  int status = ofa_model_init_profiled(&profiler);
  size_t stack = stack_used();
  if (status != 0) {
    static const char* const what[] = {"", "the model's schema version is not TFLite Micro's",
                                       "the op resolver could not add the model's ops",
                                       "AllocateTensors failed"};
    std::fprintf(stderr, "ofa-firmware error: %s (arena of %u bytes)\n", what[status],
                 static_cast<unsigned>(OFA_ARENA_BYTES));
    return 3;
  }
  std::printf("ofa-firmware arena %u %u\n", static_cast<unsigned>(ofa_model_arena_used()),
              static_cast<unsigned>(OFA_ARENA_BYTES));

  size_t in_bytes = 0, out_bytes = 0;
  int8_t* input = ofa_model_input(&in_bytes);
  const int8_t* output = ofa_model_output(&out_bytes);
  std::FILE* in = std::fopen("input.bin", "rb");
  std::FILE* out = std::fopen("output.bin", "wb");
  if (!in || !out) {
    std::fprintf(stderr, "ofa-firmware error: cannot open input.bin or output.bin in QEMU's folder\n");
    return 4;
  }
  uint64_t invoke_ticks = 0;
  unsigned images = 0;
  while (true) {
    size_t got = std::fread(input, 1, in_bytes, in);
    if (got == 0) break;
    if (got != in_bytes) {
      std::fprintf(stderr, "ofa-firmware error: input.bin ends inside an image (%u of %u bytes)\n",
                   static_cast<unsigned>(got), static_cast<unsigned>(in_bytes));
      return 4;
    }
    paint_stack();
    profiler.NewInvoke();
    uint64_t start = ticks();
    if (ofa_model_invoke() != 0) {
      std::fprintf(stderr, "ofa-firmware error: Invoke failed on image %u\n", images);
      return 5;
    }
    invoke_ticks += ticks() - start;
    size_t used = stack_used();
    if (used > stack) stack = used;
    std::fwrite(output, 1, out_bytes, out);
    ++images;
  }
  std::fclose(in);
  std::fclose(out);
  std::printf("ofa-firmware stack %u %u\n", static_cast<unsigned>(stack),
              static_cast<unsigned>(reinterpret_cast<uintptr_t>(&__stack_top__) -
                                    reinterpret_cast<uintptr_t>(&__stack_limit__)));
  std::printf("ofa-firmware io %u %u %u\n", images, static_cast<unsigned>(in_bytes), static_cast<unsigned>(out_bytes));
  std::printf("ofa-firmware invoke %llu\n", static_cast<unsigned long long>(invoke_ticks));
  profiler.Report();
  std::printf("ofa-firmware done\n");
  return 0;
}
