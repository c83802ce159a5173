package runtimeconf

import (
	"fmt"
	"io"
	"strings"
)

// Finding is one thing doctor checked: fine, or a problem with how to fix it.
type Finding struct {
	Problem bool   // false: the check passed (Summary says what was found)
	Summary string // one line
	Fix     string // for a problem: what to do, possibly several lines (a config snippet)
}

// OK is a passed check.
func OK(format string, args ...any) Finding {
	return Finding{Summary: fmt.Sprintf(format, args...)}
}

// Problemf is a failed check and its fix.
func Problemf(fix, format string, args ...any) Finding {
	return Finding{Problem: true, Summary: fmt.Sprintf(format, args...), Fix: fix}
}

// WriteFindings prints the findings as a list ("ok" or "PROBLEM", the fix indented below) and
// returns how many are problems.
func WriteFindings(w io.Writer, fs []Finding) (problems int) {
	for _, f := range fs {
		tag := "ok     "
		if f.Problem {
			tag = "PROBLEM"
			problems++
		}
		fmt.Fprintf(w, "%s %s\n", tag, f.Summary)
		if f.Fix != "" {
			for _, line := range strings.Split(strings.TrimRight(f.Fix, "\n"), "\n") {
				fmt.Fprintf(w, "        %s\n", line)
			}
		}
	}
	return problems
}
