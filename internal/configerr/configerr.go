// Package configerr carries configuration problems as (path, message) pairs,
// so that each package can validate its own section while the command that
// assembled the YAML document maps every path back to a line number.
package configerr

import (
	"fmt"
	"strings"
)

// Error is one configuration problem. Path is a dotted YAML path such as
// "gateways[0].dial_plan", relative to the document root.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// List collects problems; its zero value is ready to use.
type List []*Error

// Add records a problem at path.
func (l *List) Add(path, format string, args ...any) {
	*l = append(*l, &Error{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Merge appends the problems of other, each prefixed with prefix (which may be empty).
func (l *List) Merge(prefix string, other List) {
	for _, e := range other {
		p := e.Path
		switch {
		case prefix == "":
		case p == "":
			p = prefix
		case strings.HasPrefix(p, "["):
			p = prefix + p
		default:
			p = prefix + "." + p
		}
		*l = append(*l, &Error{Path: p, Msg: e.Msg})
	}
}

// Err returns nil when the list is empty, the list itself otherwise.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

func (l List) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}
