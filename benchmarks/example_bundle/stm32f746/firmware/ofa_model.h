/* ofa-edge firmware API: one int8 model, a static arena, no heap. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* Builds the interpreter and allocates the tensors; 0 on success. */
int ofa_model_init(void);
/* The input and output tensors (int8, NHWC input, one row of logits out) and their sizes. */
int8_t* ofa_model_input(size_t* bytes);
const int8_t* ofa_model_output(size_t* bytes);
/* Runs one inference; 0 on success. */
int ofa_model_invoke(void);
/* Arena bytes the allocator really used (after ofa_model_init). */
size_t ofa_model_arena_used(void);
#ifdef __cplusplus
}
#endif
