package ws

import (
	"errors"
	"math"
	"testing"
)

// Fuzz targets. Seed corpora live in testdata/fuzz/<Target>/; run e.g.
//
//	go test ./ws -run '^$' -fuzz FuzzDecodeClientMessage -fuzztime 30s

func isSentinel(err error) bool {
	for _, s := range []error{ErrMalformed, ErrUnknownType, ErrMissingField, ErrWrongType, ErrOutOfRange, ErrUploadFirstMessage, ErrTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzParseSessionConfig(f *testing.F) {
	f.Add([]byte(`{"sde":false,"lora":true,"depth":4,"vae_window":0.36,"crop":0,"steps":8,"fast_vae":false,"walk_window":true,"walk_window_s":60,"enabled_loras":[],"prompt":"x","prompt_b":"y","lora_strengths":{},"fixture_name":"test.wav","use_server_fixture":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = FirstMessageKind(b)
		c, err := ParseSessionConfig(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if c.Depth < 1 || c.Depth > MaxPipelineDepth || c.Steps < MinSteps || c.Steps > MaxSteps ||
			c.VAEWindow < MinVAEWindow || c.VAEWindow > MaxVAEWindow || c.Crop < 0 || c.Crop > MaxCropSeconds ||
			c.WalkWindowS < MinWalkWindowS || c.WalkWindowS > MaxWalkWindowS {
			t.Fatalf("unclamped config %+v", c)
		}
		for _, v := range c.LoRAStrengths {
			if !(v >= 0 && v <= MaxLoRAStrength) {
				t.Fatalf("unclamped strength %v", v)
			}
		}
		if c.StemSourceMode != "" && !validStemMode(c.StemSourceMode) {
			t.Fatalf("bad stem mode %q", c.StemSourceMode)
		}
	})
}

func FuzzDecodePCMFrame(f *testing.F) {
	f.Add(AppendPCMFrame(nil, 2, []float32{0.1, -0.1, 0.2, -0.2}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, n, s, err := DecodePCMFrame(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if ch < 1 || ch > 2 || n < 1 || len(s) != ch*n {
			t.Fatalf("inconsistent result ch=%d n=%d len=%d", ch, n, len(s))
		}
		for _, v := range s {
			if math.IsNaN(float64(v)) || math.Abs(float64(v)) > MaxPCMAmplitude {
				t.Fatalf("unsanitised sample %v", v)
			}
		}
	})
}

func FuzzDecodeClientMessage(f *testing.F) {
	f.Add([]byte(`{"type":"params","raw":{"denoise":0.5},"playback_pos":1.5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeClientMessage(b)
		if err != nil {
			if m != nil {
				t.Fatalf("message %#v returned with error %v", m, err)
			}
			if !isSentinel(err) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		typ, err := MessageTypeOf(b)
		if err != nil || typ != m.Type() {
			t.Fatalf("type mismatch %q vs %q (%v)", typ, m.Type(), err)
		}
		if p, ok := m.(*Params); ok {
			_ = p.Raw.DCW()
			_ = p.Raw.ChannelGains()
			_ = p.Raw.LoRAStrengths()
			if d := p.Raw.Denoise(); !(d >= 0 && d <= 1) {
				t.Fatalf("denoise %v", d)
			}
		}
	})
}

func FuzzDecodeSliceHeader(f *testing.F) {
	f.Add(append(AppendSliceHeader(nil, SliceHeader{Flags: SliceRaw, StartSample: 2, NumSamples: 1, Channels: 2}), 0, 60, 0, 188))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := DecodeSliceHeader(b)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if string(AppendSliceHeader(nil, h)) != string(b[:SliceHeaderSize]) || len(payload) != len(b)-SliceHeaderSize {
			t.Fatal("header does not round-trip")
		}
		m, err := NewMirror(2, make([]float32, 2*64))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		_ = m.Apply(b) // must not panic
	})
}
