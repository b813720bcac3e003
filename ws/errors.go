package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Sentinel errors. Every decoding error wraps exactly one of them, so a
// server can branch with errors.Is and still log the precise message.
var (
	// ErrMalformed: the bytes are not a JSON object (or not a valid binary
	// frame layout).
	ErrMalformed = errors.New("malformed message")
	// ErrUnknownType: a JSON message whose "type" demon does not know. The
	// server should answer with a NotSupported event (see UnknownTypeError).
	ErrUnknownType = errors.New("unknown message type")
	// ErrMissingField: a required field is absent or null.
	ErrMissingField = errors.New("missing required field")
	// ErrWrongType: a field has the wrong JSON type.
	ErrWrongType = errors.New("wrong field type")
	// ErrOutOfRange: a value that cannot be clamped (an unknown enum value,
	// a number outside its domain).
	ErrOutOfRange = errors.New("value out of range")
	// ErrUploadFirstMessage: ParseSessionConfig was handed the first message
	// of an upload socket ({"type":"upload_track"}).
	ErrUploadFirstMessage = errors.New(`first message is "upload_track", not a session config`)
	// ErrTooLarge: a binary frame exceeds its size limit.
	ErrTooLarge = errors.New("frame too large")
)

// FieldError describes a problem with one field of a JSON message.
type FieldError struct {
	Msg    string // message type, or "session config"
	Field  string // JSON key (dotted for nested keys)
	Kind   error  // ErrMissingField, ErrWrongType or ErrOutOfRange
	Detail string // e.g. "want number, got string"
}

func (e *FieldError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("ws: %s: field %q: %v", e.Msg, e.Field, e.Kind)
	}
	return fmt.Sprintf("ws: %s: field %q: %v: %s", e.Msg, e.Field, e.Kind, e.Detail)
}

// Unwrap returns the sentinel kind.
func (e *FieldError) Unwrap() error { return e.Kind }

// UnknownTypeError reports a client message type demon does not implement.
type UnknownTypeError struct{ Type string }

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("ws: %v %q", ErrUnknownType, e.Type)
}

// Unwrap returns ErrUnknownType.
func (e *UnknownTypeError) Unwrap() error { return ErrUnknownType }

// ---- permissive JSON object access ------------------------------------------

// object is a decoded JSON object with typed, error-reporting accessors. A
// key whose value is null counts as absent everywhere.
type object struct {
	msg string
	m   map[string]json.RawMessage
}

func parseObject(msg string, b []byte) (object, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		var what string
		switch {
		case err != nil:
			var se *json.SyntaxError
			if errors.As(err, &se) {
				what = fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
			} else {
				what = "want a JSON object, got " + jsonKind(trimSpace(b))
			}
		default:
			what = "want a JSON object, got null"
		}
		return object{}, fmt.Errorf("ws: %s: %w: %s", msg, ErrMalformed, what)
	}
	return object{msg: msg, m: m}, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

// jsonKind names the JSON type of a raw value.
func jsonKind(r []byte) string {
	r = trimSpace(r)
	if len(r) == 0 {
		return "nothing"
	}
	switch r[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func (o object) raw(key string) (json.RawMessage, bool) {
	r, ok := o.m[key]
	if !ok || jsonKind(r) == "null" {
		return nil, false
	}
	return r, true
}

func (o object) wrong(key, want string, r json.RawMessage) error {
	return &FieldError{Msg: o.msg, Field: key, Kind: ErrWrongType, Detail: "want " + want + ", got " + jsonKind(r)}
}

func (o object) missing(key string) error {
	return &FieldError{Msg: o.msg, Field: key, Kind: ErrMissingField}
}

func (o object) outOfRange(key, detail string) error {
	return &FieldError{Msg: o.msg, Field: key, Kind: ErrOutOfRange, Detail: detail}
}

func (o object) str(key string) (string, bool, error) {
	r, ok := o.raw(key)
	if !ok {
		return "", false, nil
	}
	var s string
	if jsonKind(r) != "string" || json.Unmarshal(r, &s) != nil {
		return "", false, o.wrong(key, "string", r)
	}
	return s, true, nil
}

func (o object) reqStr(key string, nonEmpty bool) (string, error) {
	s, ok, err := o.str(key)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", o.missing(key)
	}
	if nonEmpty && s == "" {
		return "", o.outOfRange(key, "must not be empty")
	}
	return s, nil
}

func (o object) optStr(key string) (*string, error) {
	s, ok, err := o.str(key)
	if err != nil || !ok {
		return nil, err
	}
	return &s, nil
}

func (o object) num(key string) (float64, bool, error) {
	r, ok := o.raw(key)
	if !ok {
		return 0, false, nil
	}
	if jsonKind(r) != "number" {
		return 0, false, o.wrong(key, "number", r)
	}
	var f float64
	if err := json.Unmarshal(r, &f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false, o.outOfRange(key, "not a finite float64")
	}
	return f, true, nil
}

func (o object) reqNum(key string) (float64, error) {
	f, ok, err := o.num(key)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, o.missing(key)
	}
	return f, nil
}

func (o object) boolean(key string) (bool, bool, error) {
	r, ok := o.raw(key)
	if !ok {
		return false, false, nil
	}
	if jsonKind(r) != "boolean" {
		return false, false, o.wrong(key, "boolean", r)
	}
	return r[0] == 't', true, nil
}

func (o object) strList(key string) ([]string, bool, error) {
	r, ok := o.raw(key)
	if !ok {
		return nil, false, nil
	}
	var v []string
	if jsonKind(r) != "array" || json.Unmarshal(r, &v) != nil {
		return nil, false, o.wrong(key, "array of strings", r)
	}
	return v, true, nil
}

func (o object) numMap(key string) (map[string]float64, bool, error) {
	r, ok := o.raw(key)
	if !ok {
		return nil, false, nil
	}
	var v map[string]*float64
	if jsonKind(r) != "object" || json.Unmarshal(r, &v) != nil {
		return nil, false, o.wrong(key, "object of numbers", r)
	}
	out := make(map[string]float64, len(v))
	for k, f := range v {
		if f != nil { // null entries are ignored
			out[k] = *f
		}
	}
	return out, true, nil
}

func clamp(v, lo, hi float64) float64 { return max(lo, min(hi, v)) }

// toInt truncates toward zero like Python's int(), saturating.
func toInt(f float64, lo, hi int) int {
	f = math.Trunc(f)
	if f < float64(lo) {
		return lo
	}
	if f > float64(hi) {
		return hi
	}
	return int(f)
}
