// Package config reads a mirrors file: the YAML that describes many
// mirrors for one process (xmirror run --config). It knows the file's
// shape — settings, defaults, a list of mirrors — and where each value was
// written, and expands environment variables; what each key means is the
// command's: every key is the name of a flag of the mirror commands, so
// the file and the command line can never drift apart.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Keys of the file's shape; every other key is a setting.
const (
	KeyDefaults  = "defaults"
	KeyMirrors   = "mirrors"
	KeyName      = "name"
	KeyDirection = "direction"
)

// A File is a mirrors file as read.
type File struct {
	Path string
	// Settings are the top-level keys: connections and the process's
	// own settings, which apply to every mirror.
	Settings []Setting
	// Defaults apply to every mirror that does not set the key itself
	// and whose direction has it.
	Defaults []Setting
	Mirrors  []Mirror
}

// A Mirror is one entry of the file's mirrors list.
type Mirror struct {
	Pos       Pos
	Name      string
	NamePos   Pos
	Direction string
	DirPos    Pos
	Settings  []Setting
}

// A Setting is one key and its value or values.
type Setting struct {
	Key    string
	Pos    Pos // of the key
	Values []string
	// List is true for a value written as a sequence, whose items are
	// given one by one (as a repeated flag).
	List     bool
	ValuePos []Pos // of each value
}

// Pos is a place in the file, 1-based.
type Pos struct{ Line, Col int }

// A Problem is what is wrong at a place of the file.
type Problem struct {
	Pos Pos
	Msg string
}

// An Error lists every problem of a file, each at its place.
type Error struct {
	Path     string
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = e.At(p)
	}
	return strings.Join(parts, "; ")
}

// At is a problem as a line: FILE:LINE:COL: what.
func (e *Error) At(p Problem) string {
	if p.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", e.Path, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.Path, p.Pos.Line, p.Pos.Col, p.Msg)
}

// Add adds a problem at pos.
func (e *Error) Add(pos Pos, format string, args ...any) {
	e.Problems = append(e.Problems, Problem{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// Err is e, or nil without problems.
func (e *Error) Err() error {
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}

// Load reads and parses the file at path.
func Load(path string, getenv func(string) (string, bool)) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mirrors file: %w", err)
	}
	return Parse(path, data, getenv)
}

// Parse reads a mirrors file's text; path names it in problems. Values
// have ${VAR} and ${VAR:-default} expanded from getenv. It returns an
// *Error listing every problem it found and, unless the file's shape
// could not be read at all, the file with what could be read of it (so
// a caller can add the problems of its settings to the same list).
func Parse(path string, data []byte, getenv func(string) (string, bool)) (*File, error) {
	e := &Error{Path: path}
	f := &File{Path: path}
	doc, err := parser.ParseBytes(data, 0)
	if err != nil {
		e.Problems = append(e.Problems, syntaxProblem(err))
		return nil, e
	}
	if len(doc.Docs) != 1 || doc.Docs[0].Body == nil {
		if len(doc.Docs) > 1 {
			e.Add(pos(doc.Docs[1].Body), "a mirrors file holds one YAML document, found %d", len(doc.Docs))
		} else {
			e.Add(Pos{}, "the file is empty: it needs a %q list", KeyMirrors)
		}
		return nil, e
	}
	top, ok := mapping(doc.Docs[0].Body)
	if !ok {
		e.Add(pos(doc.Docs[0].Body), "the file must be a mapping of settings, %q and %q, not a %s", KeyDefaults, KeyMirrors, kind(doc.Docs[0].Body))
		return nil, e
	}
	r := reader{e: e, getenv: getenv}
	sawMirrors := false
	for _, kv := range r.pairs(top) {
		switch kv.key {
		case KeyDefaults:
			m, ok := mapping(kv.value)
			if !ok {
				e.Add(pos(kv.value), "%q must be a mapping of settings, not a %s", KeyDefaults, kind(kv.value))
				continue
			}
			for _, d := range r.pairs(m) {
				if d.key == KeyName || d.key == KeyDirection {
					e.Add(d.pos, "%q has no default: each mirror sets its own", d.key)
					continue
				}
				if s, ok := r.setting(d); ok {
					f.Defaults = append(f.Defaults, s)
				}
			}
		case KeyMirrors:
			sawMirrors = true
			f.Mirrors = r.mirrors(kv)
		case KeyName, KeyDirection:
			e.Add(kv.pos, "%q belongs to each mirror, under %q", kv.key, KeyMirrors)
		default:
			if s, ok := r.setting(kv); ok {
				f.Settings = append(f.Settings, s)
			}
		}
	}
	if !sawMirrors {
		e.Add(Pos{Line: 1, Col: 1}, "the file has no %q list", KeyMirrors)
	}
	return f, e.Err()
}

// mirrors reads the mirrors list; names must be unique.
func (r *reader) mirrors(kv pair) []Mirror {
	seq, ok := kv.value.(*ast.SequenceNode)
	if !ok {
		r.e.Add(pos(kv.value), "%q must be a list of mirrors, not a %s", KeyMirrors, kind(kv.value))
		return nil
	}
	if len(seq.Values) == 0 {
		r.e.Add(kv.pos, "%q is empty: list at least one mirror", KeyMirrors)
	}
	var out []Mirror
	names := map[string]Pos{}
	for _, item := range seq.Values {
		m, ok := mapping(item)
		if !ok {
			r.e.Add(pos(item), "a mirror must be a mapping of its settings, not a %s", kind(item))
			continue
		}
		mir := Mirror{Pos: mappingPos(m)}
		for _, p := range r.pairs(m) {
			switch p.key {
			case KeyName, KeyDirection:
				s, ok := r.setting(p)
				if !ok {
					continue
				}
				if s.List || s.Values[0] == "" {
					r.e.Add(s.ValuePos[0], "%q must be one non-empty value", p.key)
					continue
				}
				if p.key == KeyName {
					mir.Name, mir.NamePos = s.Values[0], s.ValuePos[0]
				} else {
					mir.Direction, mir.DirPos = s.Values[0], s.ValuePos[0]
				}
			default:
				if s, ok := r.setting(p); ok {
					mir.Settings = append(mir.Settings, s)
				}
			}
		}
		switch {
		case mir.Name == "":
			r.e.Add(mir.Pos, "a mirror needs a %q: it keys its checkpoint and its lease", KeyName)
		case names[mir.Name] != Pos{}:
			first := names[mir.Name]
			r.e.Add(mir.NamePos, "mirror name %q is used twice (first at line %d): each name keys one checkpoint", mir.Name, first.Line)
		default:
			names[mir.Name] = mir.NamePos
		}
		if mir.Direction == "" {
			r.e.Add(mir.Pos, "mirror %q needs a %q: redis-to-kafka or kafka-to-redis", mir.Name, KeyDirection)
		}
		out = append(out, mir)
	}
	return out
}

// reader reads the nodes of a file, adding what is wrong to e.
type reader struct {
	e      *Error
	getenv func(string) (string, bool)
}

type pair struct {
	key   string
	pos   Pos
	value ast.Node
}

// pairs are the key/value pairs of a mapping (the parser refuses a key
// given twice); a key that is not a plain name is a problem.
func (r *reader) pairs(m *ast.MappingNode) []pair {
	var out []pair
	for _, v := range m.Values {
		k, ok := v.Key.(ast.ScalarNode)
		if !ok || v.Key.Type() != ast.StringType {
			r.e.Add(pos(v.Key), "a key must be a name, not a %s", kind(v.Key))
			continue
		}
		out = append(out, pair{key: fmt.Sprint(k.GetValue()), pos: pos(v.Key), value: v.Value})
	}
	return out
}

// mappingPos is where a mapping starts: its first key (a mapping's own
// token is its first colon).
func mappingPos(m *ast.MappingNode) Pos {
	if len(m.Values) > 0 {
		return pos(m.Values[0].Key)
	}
	return pos(m)
}

// setting reads a key's value: a scalar, or a sequence of scalars.
func (r *reader) setting(p pair) (Setting, bool) {
	s := Setting{Key: p.key, Pos: p.pos}
	add := func(n ast.Node) bool {
		sc, ok := n.(ast.ScalarNode)
		if !ok || n.Type() == ast.NullType {
			what := kind(n)
			if n.Type() == ast.NullType {
				what = "nothing"
			}
			r.e.Add(pos(n), "%q takes a value (text, a number, true or false) or a list of them, not %s", p.key, what)
			return false
		}
		v, err := expand(scalarText(sc), r.getenv)
		if err != nil {
			r.e.Add(pos(n), "%q: %v", p.key, err)
			return false
		}
		s.Values = append(s.Values, v)
		s.ValuePos = append(s.ValuePos, pos(n))
		return true
	}
	if seq, ok := p.value.(*ast.SequenceNode); ok {
		s.List = true
		if len(seq.Values) == 0 {
			r.e.Add(pos(p.value), "%q is an empty list", p.key)
			return s, false
		}
		good := true
		for _, item := range seq.Values {
			good = add(item) && good
		}
		return s, good
	}
	return s, add(p.value)
}

// scalarText is a scalar as written, unquoted: the flag parses it, so
// "yes", "010" or "1e3" mean to a key what they mean on the command line.
func scalarText(n ast.ScalarNode) string {
	if s, ok := n.(*ast.StringNode); ok {
		return s.Value
	}
	if t := n.GetToken(); t != nil {
		return t.Value
	}
	return fmt.Sprint(n.GetValue())
}

// mapping is n as a mapping; an empty flow mapping ({}) is one too.
func mapping(n ast.Node) (*ast.MappingNode, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m, true
	case *ast.MappingValueNode:
		return ast.Mapping(m.GetToken(), false, m), true
	}
	return nil, false
}

func pos(n ast.Node) Pos {
	if n == nil || n.GetToken() == nil || n.GetToken().Position == nil {
		return Pos{}
	}
	p := n.GetToken().Position
	return Pos{Line: p.Line, Col: p.Column}
}

// kind names a node's type for a problem.
func kind(n ast.Node) string {
	switch n.Type() {
	case ast.MappingType, ast.MappingValueType:
		return "mapping"
	case ast.SequenceType:
		return "list"
	case ast.NullType:
		return "null"
	case ast.StringType:
		return "text"
	case ast.IntegerType, ast.FloatType:
		return "number"
	case ast.BoolType:
		return "boolean"
	}
	return strings.ToLower(n.Type().String())
}

// syntaxProblem is a YAML syntax error at its place.
func syntaxProblem(err error) Problem {
	var se yaml.Error
	if errors.As(err, &se) {
		if t := se.GetToken(); t != nil && t.Position != nil {
			return Problem{Pos: Pos{Line: t.Position.Line, Col: t.Position.Column}, Msg: "not valid YAML: " + se.GetMessage()}
		}
		return Problem{Msg: "not valid YAML: " + se.GetMessage()}
	}
	return Problem{Msg: "not valid YAML: " + err.Error()}
}
