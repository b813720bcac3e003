package trt

/*
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import "unsafe"

// Prompt is a text prompt in DEMON's template (spec/engine.md §2.6); empty fields take the
// template's defaults.
type Prompt struct {
	Tags          string
	BPM           string
	TimeSignature string
	Key           string
	Duration      string
}

// MaxTokens is the longest token sequence (and the capacity Tokenize needs).
const MaxTokens = 512

// Tokenize returns the token ids (zero-padded, 32..512 long) for the text_encoder engine.
// negative selects the unconditional prompt (empty tags).
func Tokenize(p Prompt, negative bool) ([]int32, error) {
	strs := []*C.char{}
	cstr := func(s string) *C.char {
		if s == "" {
			return nil
		}
		c := C.CString(s)
		strs = append(strs, c)
		return c
	}
	defer func() {
		for _, c := range strs {
			C.free(unsafe.Pointer(c))
		}
	}()
	cp := C.dm_prompt{tags: cstr(p.Tags), bpm: cstr(p.BPM), time_signature: cstr(p.TimeSignature), key: cstr(p.Key), duration: cstr(p.Duration)}
	ids := make([]int32, MaxTokens)
	var n C.int
	var ce C.dm_error
	if err := check("tokenize prompt", C.dm_prompt_tokenize(&cp, cbool(negative), (*C.int32_t)(unsafe.Pointer(&ids[0])), C.int(len(ids)), &n, &ce), &ce); err != nil {
		return nil, err
	}
	return ids[:n], nil
}
