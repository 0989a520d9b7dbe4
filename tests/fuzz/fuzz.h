/* The libFuzzer entry point every tests/fuzz target defines; replay.c calls it for each
 * corpus file when the target is built without libFuzzer (the unit suite's regression
 * run). */
#ifndef REEF_FUZZ_H
#define REEF_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
