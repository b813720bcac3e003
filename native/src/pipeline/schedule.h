// Timestep schedule of one slot (spec/engine.md §4.2).
//
// DEMON computes the schedule in the pipeline dtype (bf16 on CUDA). The daemon computes it in
// fp32 (BuildSchedule); BuildScheduleBf16 emulates DEMON's bf16 arithmetic (every operation
// rounded to bf16, round-to-nearest-even) and exists for the table test / parity checks only.
#pragma once

#include <vector>

namespace dm {
namespace pipe {

// Most values a schedule can have (steps + 1, or 2 for denoise <= 1e-6).
inline int ScheduleCapacity(int steps) { return steps + 1 > 2 ? steps + 1 : 2; }

// Writes the schedule into out[0..n) and returns n: steps+1 values from t0 down to 0, or
// {0, 0} when denoise <= 1e-6. out needs ScheduleCapacity(steps) floats. Does not allocate.
// Throws dm::Error(kInvalidArgument) for steps < 1, shift <= 0 or a non-finite denoise.
int BuildScheduleInto(int steps, float shift, float denoise, float* out);
int BuildScheduleBf16Into(int steps, float shift, float denoise, float* out);

std::vector<float> BuildSchedule(int steps, float shift, float denoise);
std::vector<float> BuildScheduleBf16(int steps, float shift, float denoise);

// Rounds a float to the nearest bfloat16 value (ties to even), returned as a float.
float RoundBf16(float x);

}  // namespace pipe
}  // namespace dm
