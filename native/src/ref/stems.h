// Deterministic stem-separation stand-in: stereo audio → vocals + instruments.
//
// vocals = the mid signal (L+R)/2 band-passed to the voice band (one-pole high-pass at
// 150 Hz, then one-pole low-pass at 4 kHz, zero initial state, double precision), the same
// in both channels; instruments = input − vocals. The split is exact in float32:
// vocals[i] + instruments[i] == input[i] bitwise for every sample (where
// |input| is far below the wanted vocal, i.e. near zero crossings of the mix, the vocal is
// limited to [min(0,x), max(0,x)] because no exact float32 split exists there).
#pragma once

namespace dm {
namespace ref {

// audio, vocals, instruments: planar [2, S] (left then right). Outputs must not alias the
// input. No allocation.
void SeparateStems(const float* audio, long samples, float* vocals, float* instruments);

}  // namespace ref
}  // namespace dm
