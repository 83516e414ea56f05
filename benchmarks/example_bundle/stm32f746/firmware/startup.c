/* Cortex-M startup for ofa-edge firmware: the vector table, .data/.bss set-up, the FPU, then
 * main. Written for ofa-edge; links against newlib (rdimon for the test image, nosys for the
 * deployment image). */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top__;
extern int main(void);
extern void __libc_init_array(void);
#ifdef OFA_SEMIHOSTING
extern void initialise_monitor_handles(void);
#endif

void Reset_Handler(void);
void ofa_fault(uint32_t exception);

void Default_Handler(void) {
  uint32_t ipsr;
  __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
  ofa_fault(ipsr & 0x1ff);
  for (;;) {
  }
}

__attribute__((weak)) void ofa_fault(uint32_t exception) { (void)exception; }
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

typedef void (*handler_t)(void);
__attribute__((section(".vectors"), used)) const handler_t ofa_vectors[16] = {
    (handler_t)&__stack_top__, Reset_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    SysTick_Handler};

/* newlib's __libc_init_array calls these; -nostartfiles drops crti/crtn. */
void _init(void) {}
void _fini(void) {}
void* __dso_handle = 0;

void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  *(volatile uint32_t*)0xE000ED88 |= (0xFu << 20); /* CPACR: CP10 and CP11 full access */
  __asm volatile("dsb\n isb");
#endif
  memcpy(&__data_start__, &__data_load__, (size_t)((char*)&__data_end__ - (char*)&__data_start__));
  memset(&__bss_start__, 0, (size_t)((char*)&__bss_end__ - (char*)&__bss_start__));
#ifdef OFA_SEMIHOSTING
  initialise_monitor_handles();
#endif
  __libc_init_array();
  exit(main());
}
