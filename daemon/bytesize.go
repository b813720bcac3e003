package daemon

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a number of bytes that parses and prints with units ("24GiB", "512MiB",
// "1.5GB", "1000").
type ByteSize uint64

var byteUnits = []struct {
	suffix string
	factor float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseByteSize parses a size such as "24GiB" (binary units KiB..TiB, decimal KB..TB,
// K/M/G/T as binary shorthands, or plain bytes).
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	factor := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			factor = u.factor
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("invalid size %q (want e.g. 24GiB, 512MiB, 1.5GB or a byte count)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("invalid size %q: negative", s)
	}
	b := v * factor
	if b >= math.MaxUint64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return ByteSize(math.Round(b)), nil
}

// String prints the size in the largest binary unit that keeps it readable.
func (b ByteSize) String() string {
	units := []struct {
		name   string
		factor float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if float64(b) >= u.factor {
			v := strconv.FormatFloat(float64(b)/u.factor, 'f', 2, 64)
			return strings.TrimRight(strings.TrimRight(v, "0"), ".") + u.name
		}
	}
	return strconv.FormatUint(uint64(b), 10) + "B"
}

// UnmarshalText lets TOML and flags parse sizes.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
