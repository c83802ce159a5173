package registryapi

import (
	"net/http"
	"testing"
)

func TestParseRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		header  string
		size    int64
		want    byteRange
		partial bool
		invalid bool
	}{
		{name: "no header", header: "", size: 20},
		{name: "no header, unknown size", header: "", size: -1},
		{name: "closed", header: "bytes=0-9", size: 20, want: byteRange{0, 10}, partial: true},
		{name: "one byte", header: "bytes=19-19", size: 20, want: byteRange{19, 1}, partial: true},
		{name: "open", header: "bytes=5-", size: 20, want: byteRange{5, 15}, partial: true},
		{name: "end past size is clamped", header: "bytes=10-100", size: 20, want: byteRange{10, 10}, partial: true},
		{name: "whole as a range", header: "bytes=0-", size: 20, want: byteRange{0, 20}, partial: true},
		{name: "suffix", header: "bytes=-3", size: 20, want: byteRange{17, 3}, partial: true},
		{name: "suffix longer than blob", header: "bytes=-30", size: 20, want: byteRange{0, 20}, partial: true},
		{name: "spaces around the spec", header: "bytes= 0-1 ", size: 20, want: byteRange{0, 2}, partial: true},
		{name: "leading zeros", header: "bytes=007-008", size: 20, want: byteRange{7, 2}, partial: true},
		{name: "max int64 end", header: "bytes=0-9223372036854775807", size: 20, want: byteRange{0, 20}, partial: true},
		{name: "start at size", header: "bytes=20-", size: 20, invalid: true},
		{name: "start past size", header: "bytes=100-200", size: 20, invalid: true},
		{name: "empty blob", header: "bytes=0-", size: 0, invalid: true},
		{name: "suffix of empty blob", header: "bytes=-1", size: 0, invalid: true},
		{name: "zero suffix", header: "bytes=-0", size: 20, invalid: true},
		{name: "multiple ranges", header: "bytes=0-1,3-4", size: 20, invalid: true},
		{name: "trailing comma", header: "bytes=0-1,", size: 20, invalid: true},
		{name: "letters", header: "bytes=a-b", size: 20, invalid: true},
		{name: "other unit", header: "items=0-1", size: 20, invalid: true},
		{name: "upper case unit", header: "BYTES=0-1", size: 20, invalid: true},
		{name: "reversed", header: "bytes=5-2", size: 20, invalid: true},
		{name: "no dash", header: "bytes=5", size: 20, invalid: true},
		{name: "only dash", header: "bytes=-", size: 20, invalid: true},
		{name: "empty spec", header: "bytes=", size: 20, invalid: true},
		{name: "double dash", header: "bytes=--1", size: 20, invalid: true},
		{name: "negative end", header: "bytes=1--2", size: 20, invalid: true},
		{name: "plus sign", header: "bytes=+1-2", size: 20, invalid: true},
		{name: "hex", header: "bytes=0x1-2", size: 20, invalid: true},
		{name: "overflowing start", header: "bytes=99999999999999999999-", size: 20, invalid: true},
		{name: "overflowing end", header: "bytes=0-99999999999999999999", size: 20, invalid: true},
		{name: "overflowing 19 digits", header: "bytes=9999999999999999999-", size: 20, invalid: true},
		{name: "unknown size", header: "bytes=0-1", size: -1, invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, partial, err := parseRange(tc.header, tc.size)
			if tc.invalid {
				if err == nil || err.Status != http.StatusRequestedRangeNotSatisfiable || err.Code != CodeRangeInvalid {
					t.Fatalf("parseRange(%q, %d) = %+v, %v, %v; want RANGE_INVALID", tc.header, tc.size, got, partial, err)
				}
				return
			}
			if err != nil || got != tc.want || partial != tc.partial {
				t.Fatalf("parseRange(%q, %d) = %+v, %v, %v; want %+v, %v", tc.header, tc.size, got, partial, err, tc.want, tc.partial)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in         string
		start, end int64
		ok         bool
	}{
		{"0-9", 0, 9, true},
		{"10-10", 10, 10, true},
		{"bytes 0-9", 0, 9, true},
		{"bytes=0-9/100", 0, 9, true},
		{" 5-6 ", 5, 6, true},
		{"9-0", 0, 0, false},
		{"-1", 0, 0, false},
		{"1-", 0, 0, false},
		{"a-b", 0, 0, false},
		{"1--2", 0, 0, false},
		{"+1-2", 0, 0, false},
		{"99999999999999999999-1", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		start, end, ok := parseContentRange(tc.in)
		if ok != tc.ok || start != tc.start || end != tc.end {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", tc.in, start, end, ok)
		}
	}
}
