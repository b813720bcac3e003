package audio

import (
	"fmt"
	"math"
	"slices"
)

// Deterministic demo tracks.
//
// demond bundles a few demo tracks that it synthesises itself at start-up, so
// a fresh install has something to play without downloads or checked-in
// binaries. Each track is short, loopable music: a chord progression on a
// detuned additive pad, a bass line, an arpeggio or stabs, and a beat whose
// kick, snare and hats are shaped sine sweeps and shaped noise from a fixed
// seed. Notes that ring past the end of the buffer wrap to its start, so the
// loop point is seamless even before the session's own seam fade.
//
// Output is interleaved stereo float32 at SampleRate, normalised to a peak
// of DemoPeak. The arithmetic is plain float64 with wavetables (no
// math.Sin per sample), so the output is identical run to run; on
// architectures where the compiler fuses multiply-adds (arm64, ppc64,
// s390x) the last bits may differ from amd64.

// DemoPeak is the absolute peak of every synthesised demo track.
const DemoPeak = 0.89

type demoTrack struct {
	seconds int
	render  func(s *synth)
}

var demoTracks = map[string]demoTrack{
	"demo_ambient_Am_20s.wav": {20, renderAmbient},
	"demo_groove_C_30s.wav":   {30, renderGroove},
	"demo_pulse_Gm_60s.wav":   {60, renderPulse},
}

// Catalogue returns the names SynthesizeDemo accepts, sorted.
func Catalogue() []string {
	names := make([]string, 0, len(demoTracks))
	for n := range demoTracks {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// SynthesizeDemo renders the named demo track and returns interleaved stereo
// samples at SampleRate. Durations are whole seconds (multiples of 0.2 s, so
// the buffer is already aligned to PoolFrames).
func SynthesizeDemo(name string) ([]float32, error) {
	t, ok := demoTracks[name]
	if !ok {
		return nil, fmt.Errorf("audio: unknown demo track %q (have %v)", name, Catalogue())
	}
	s := newSynth(t.seconds*SampleRate, fnv(name))
	t.render(s)
	return s.finish(), nil
}

// ---- tracks ----------------------------------------------------------------

// renderAmbient: 72 BPM, 6 bars of 4/4 (20 s): Am – F – C – G – Am – Em,
// slow pads, a soft sub bass, a sparse high pluck melody and a brushed hat.
func renderAmbient(s *synth) {
	const bpm = 72.0
	beat := 60 / bpm
	bar := 4 * beat
	prog := [][]int{{57, 60, 64, 69}, {53, 57, 60, 65}, {48, 55, 60, 64}, {55, 59, 62, 67}, {57, 60, 64, 69}, {52, 55, 59, 64}}
	for b, ch := range prog {
		t0 := float64(b) * bar
		for i, m := range ch {
			pan := -0.5 + float64(i)/float64(len(ch)-1)
			s.tone(t0, bar, midi(m), 0.11, pan, &s.pad, 0.9, 1.2, 0.15)
			s.tone(t0, bar, midi(m)*1.003, 0.07, -pan, &s.pad, 1.1, 1.2, 0.15)
		}
		s.tone(t0, bar, midi(ch[0]-24), 0.22, 0, &s.bass, 0.3, 0.8, 0.2)
		// Melody: chord tones an octave up on beats 1, 2.5 and 4.
		for j, off := range []float64{0, 1.5, 3} {
			s.tone(t0+off*beat, 1.2*beat, midi(ch[(j+b)%len(ch)]+12), 0.09, 0.3*float64(j-1), &s.pluck, 0.005, 0.3, 2.5)
		}
		for k := range 8 {
			s.hat(t0+float64(k)*beat/2, 0.025+0.015*float64(k%2), 0.06)
		}
	}
}

// renderGroove: 96 BPM, 12 bars (30 s): C – Am – F – G, kick on 1 and 3,
// snare on 2 and 4, eighth-note hats, a syncopated bass and chord stabs.
func renderGroove(s *synth) {
	const bpm = 96.0
	beat := 60 / bpm
	bar := 4 * beat
	prog := [][]int{{60, 64, 67}, {57, 60, 64}, {53, 57, 60}, {55, 59, 62}}
	for b := range 12 {
		t0 := float64(b) * bar
		ch := prog[b%len(prog)]
		for _, off := range []float64{0, 1.5, 2.5} {
			for i, m := range ch {
				s.tone(t0+off*beat, 0.8*beat, midi(m), 0.09, 0.4*float64(i-1), &s.pluck, 0.004, 0.35, 4)
			}
		}
		for i, m := range ch {
			s.tone(t0, bar, midi(m+12), 0.035, 0.6*float64(i-1), &s.pad, 0.4, 0.5, 0.3)
		}
		for _, n := range []struct{ off, dur float64 }{{0, 0.7}, {0.75, 0.2}, {1.5, 0.4}, {2, 0.7}, {3, 0.4}, {3.5, 0.4}} {
			s.tone(t0+n.off*beat, n.dur*beat, midi(ch[0]-24), 0.3, 0, &s.bass, 0.005, 0.06, 1.5)
		}
		s.kick(t0, 0.8)
		s.kick(t0+2*beat, 0.8)
		s.snare(t0+beat, 0.35)
		s.snare(t0+3*beat, 0.35)
		for k := range 8 {
			s.hat(t0+float64(k)*beat/2, 0.04, 0.12+0.06*float64(1-k%2))
		}
	}
}

// renderPulse: 120 BPM, 30 bars (60 s): Gm – Eb – Bb – F, four-on-the-floor
// kick, off-beat open hats, sixteenth closed hats, a sixteenth-note
// arpeggio and a pumping bass; the second half adds a high pad.
func renderPulse(s *synth) {
	const bpm = 120.0
	beat := 60 / bpm
	bar := 4 * beat
	six := beat / 4
	prog := [][]int{{55, 58, 62}, {51, 55, 58}, {58, 62, 65}, {53, 57, 60}}
	for b := range 30 {
		t0 := float64(b) * bar
		ch := prog[b%len(prog)]
		arp := []int{ch[0], ch[1], ch[2], ch[0] + 12, ch[2], ch[1]}
		for k := range 16 {
			m := arp[k%len(arp)] + 12
			pan := 0.5 * math.Sin(float64(k)*math.Pi/8)
			s.tone(t0+float64(k)*six, 0.9*six, midi(m), 0.07, pan, &s.pluck, 0.002, 0.15, 6)
		}
		for k := range 4 {
			s.tone(t0+float64(k)*beat+0.5*beat, 0.45*beat, midi(ch[0]-24), 0.28, 0, &s.bass, 0.004, 0.05, 2)
			s.kick(t0+float64(k)*beat, 0.85)
			s.hat(t0+float64(k)*beat+beat/2, 0.12, 0.1)
		}
		for k := range 16 {
			s.hat(t0+float64(k)*six, 0.02, 0.05+0.03*float64((k+1)%2))
		}
		if b%4 == 1 || b%4 == 3 {
			s.snare(t0+3.75*beat, 0.2)
		}
		if b >= 15 {
			for i, m := range ch {
				s.tone(t0, bar, midi(m+12), 0.04, 0.7*float64(i-1), &s.pad, 0.6, 0.6, 0.2)
			}
		}
	}
}

// ---- synthesis engine ------------------------------------------------------

const (
	tableBits = 12
	tableSize = 1 << tableBits
)

type wavetable [tableSize + 1]float64

type synth struct {
	n                int
	l, r             []float64
	rng              uint64
	pad, pluck, bass wavetable
	sine             wavetable
	hatHP, hatPrev   float64
}

func newSynth(frames int, seed uint64) *synth {
	s := &synth{n: frames, l: make([]float64, frames), r: make([]float64, frames), rng: seed | 1}
	s.pad.fill([]float64{1, 0.5, 0.33, 0.2, 0.12, 0.07})
	s.pluck.fill([]float64{1, 0.7, 0.45, 0.3, 0.2, 0.14, 0.1, 0.07})
	s.bass.fill([]float64{1, 0.4, 0.12})
	s.sine.fill([]float64{1})
	return s
}

// fill builds one normalised period of an additive waveform.
func (w *wavetable) fill(harm []float64) {
	peak := 0.0
	for i := range tableSize {
		ph := 2 * math.Pi * float64(i) / tableSize
		v := 0.0
		for k, a := range harm {
			v += a * math.Sin(float64(k+1)*ph)
		}
		w[i] = v
		peak = max(peak, math.Abs(v))
	}
	for i := range tableSize {
		w[i] /= peak
	}
	w[tableSize] = w[0]
}

func (w *wavetable) at(phase float64) float64 {
	x := phase * tableSize
	i := int(x)
	f := x - float64(i)
	return w[i] + (w[i+1]-w[i])*f
}

func midi(m int) float64 { return 440 * math.Pow(2, float64(m-69)/12) }

func (s *synth) add(i int, v, pan float64) {
	i %= s.n
	s.l[i] += v * (1 - pan) * 0.5
	s.r[i] += v * (1 + pan) * 0.5
}

// tone adds a note: linear attack, exponential decay at rate decay (1/s),
// and a linear release of rel seconds after dur. Samples past the end wrap.
func (s *synth) tone(start, dur, freq, amp, pan float64, w *wavetable, atk, rel, decay float64) {
	i0 := int(start * SampleRate)
	nOn := int(dur * SampleRate)
	nRel := int(rel * SampleRate)
	nAtk := max(1, int(atk*SampleRate))
	inc := freq / SampleRate
	ph := 0.0
	k := math.Exp(-decay / SampleRate)
	g := 1.0
	relFrom := 0.0
	for j := range nOn + nRel {
		e := g
		if j < nAtk {
			e *= float64(j) / float64(nAtk)
		}
		if j == nOn {
			relFrom = e
		}
		if j >= nOn {
			e = relFrom * (1 - float64(j-nOn)/float64(max(1, nRel)))
		}
		s.add(i0+j, amp*e*w.at(ph), pan)
		ph += inc
		ph -= math.Floor(ph)
		g *= k
	}
}

// kick: a sine sweeping 140 → 45 Hz with a fast exponential decay and a
// short noise click.
func (s *synth) kick(start, amp float64) {
	i0 := int(start * SampleRate)
	n := int(0.35 * SampleRate)
	ph := 0.0
	for j := range n {
		t := float64(j) / SampleRate
		f := 45 + 95*math.Exp(-t*30)
		ph += f / SampleRate
		ph -= math.Floor(ph)
		v := s.sine.at(ph) * math.Exp(-t*9)
		if j < 96 {
			v += 0.3 * s.noise() * (1 - float64(j)/96)
		}
		s.add(i0+j, amp*v, 0)
	}
}

// snare: band-limited noise (one-pole low-pass of a high-passed noise) with
// a 190 Hz body.
func (s *synth) snare(start, amp float64) {
	i0 := int(start * SampleRate)
	n := int(0.22 * SampleRate)
	lp, prev := 0.0, 0.0
	ph := 0.0
	for j := range n {
		t := float64(j) / SampleRate
		x := s.noise()
		hp := x - prev
		prev = x
		lp += 0.35 * (hp - lp)
		ph += 190.0 / SampleRate
		ph -= math.Floor(ph)
		v := 0.8*lp*math.Exp(-t*18) + 0.5*s.sine.at(ph)*math.Exp(-t*30)
		s.add(i0+j, amp*v, 0.1)
	}
}

// hat: high-passed noise (first difference, twice) with an exponential
// decay lasting about dur seconds.
func (s *synth) hat(start, dur, amp float64) {
	i0 := int(start * SampleRate)
	n := int((dur + 0.03) * SampleRate)
	p1, p2 := 0.0, 0.0
	rate := 5 / dur
	for j := range n {
		t := float64(j) / SampleRate
		x := s.noise()
		d1 := x - p1
		p1 = x
		d2 := d1 - p2
		p2 = d1
		s.add(i0+j, amp*0.5*d2*math.Exp(-t*rate), -0.25)
	}
}

// noise returns uniform noise in [-1, 1) from a xorshift64* generator.
func (s *synth) noise() float64 {
	s.rng ^= s.rng >> 12
	s.rng ^= s.rng << 25
	s.rng ^= s.rng >> 27
	v := s.rng * 2685821657736338717
	return float64(v>>11)/(1<<52) - 1
}

// finish normalises to DemoPeak and interleaves.
func (s *synth) finish() []float32 {
	peak := 0.0
	for i := range s.n {
		peak = max(peak, math.Abs(s.l[i]), math.Abs(s.r[i]))
	}
	g := 0.0
	if peak > 0 {
		g = DemoPeak / peak
	}
	out := make([]float32, 2*s.n)
	for i := range s.n {
		out[2*i] = float32(s.l[i] * g)
		out[2*i+1] = float32(s.r[i] * g)
	}
	return out
}

func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(s) {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
