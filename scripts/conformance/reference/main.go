// Command reference adds to test/conformance/distribution-reference.json the vectors of
// distribution/reference's reference_test.go that the first conversion left out and that
// still mean something for an image parser: TestWithNameFailure and TestDomainAndPath
// (which strings are repository names, and how they split), TestSerialization (a reference
// read by Field, that is by Parse) and TestWithTag (a name and a tag put together). Each
// vector keeps its file, test, table index and line; the cases of those tests already in
// the file are replaced, every other case is kept as it is.
//
// It reads an upstream checkout at the commit the file names and downloads nothing:
//
//	git -C reference archive 0965666a6ade reference_test.go | tar -x -C /tmp/upstream
//	cd scripts/conformance/reference && go run . -src /tmp/upstream -json ../../../test/conformance/distribution-reference.json
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const file = "reference_test.go"

// value is a table field: a string, or the name of an error variable.
type value struct {
	s     string
	isErr bool
}

type row struct {
	index  int
	line   int
	fields map[string]value
}

func main() {
	src := flag.String("src", "", "upstream tree at the commit")
	out := flag.String("json", "", "distribution-reference.json to update")
	flag.Parse()
	if *src == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: reference -src DIR -json FILE")
		os.Exit(2)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join(*src, file), nil, 0)
	must(err)

	raw, err := os.ReadFile(*out)
	must(err)
	var doc map[string]json.RawMessage
	must(json.Unmarshal(raw, &doc))
	var cases []json.RawMessage
	must(json.Unmarshal(doc["cases"], &cases))
	var notConverted map[string]int
	must(json.Unmarshal(doc["notConverted"], &notConverted))

	converted := map[string]bool{}
	var added []json.RawMessage
	add := func(test string, r row, check, input string, expect map[string]any) {
		converted[test] = true
		added = append(added, marshal(vector{
			ID: fmt.Sprintf("%s#%d", test, r.index), File: file, Test: test, Table: "tests",
			Index: r.index, Line: r.line, Check: check, Input: input, Expect: expect,
		}))
	}
	for _, r := range table(fset, f, "TestWithNameFailure") {
		add("TestWithNameFailure", r, "WithName", r.fields["input"].s, map[string]any{"error": r.fields["err"].s})
	}
	for _, r := range table(fset, f, "TestDomainAndPath") {
		add("TestDomainAndPath", r, "WithName", r.fields["input"].s, map[string]any{"domain": r.fields["domain"].s, "path": r.fields["path"].s})
	}
	for _, r := range table(fset, f, "TestSerialization") {
		e := map[string]any{}
		if v, ok := r.fields["err"]; ok {
			e["error"] = v.s
		} else {
			e["name"], e["tag"], e["digest"] = r.fields["name"].s, r.fields["tag"].s, r.fields["digest"].s
		}
		add("TestSerialization", r, "Field", r.fields["input"].s, e)
	}
	skippedWithTag := 0
	for _, r := range table(fset, f, "TestWithTag") {
		// WithDigest does not check its digest, and the one in this table is not a valid
		// one (37 hex digits), so that row says nothing about references.
		if r.fields["digest"].s != "" {
			skippedWithTag++
			continue
		}
		add("TestWithTag", r, "WithTag", r.fields["combined"].s, map[string]any{"name": r.fields["name"].s, "tag": r.fields["tag"].s})
	}

	var kept []json.RawMessage
	for _, c := range cases {
		var v struct {
			Test string `json:"test"`
		}
		must(json.Unmarshal(c, &v))
		if !converted[v.Test] {
			kept = append(kept, c)
		}
	}
	kept = append(kept, added...)
	for t := range converted {
		delete(notConverted, t)
	}
	if skippedWithTag > 0 {
		notConverted["TestWithTag"] = skippedWithTag
	} else {
		delete(notConverted, "TestWithTag")
	}
	doc["cases"] = marshal(kept)
	doc["notConverted"] = marshal(notConverted)

	// The file's key order, and every kept vector byte for byte as it was (json.Indent
	// keeps key order).
	var flat bytes.Buffer
	flat.WriteString("{")
	for i, k := range []string{"upstream", "about", "notConverted", "cases", "differences"} {
		if i > 0 {
			flat.WriteString(",")
		}
		fmt.Fprintf(&flat, "%q:%s", k, doc[k])
	}
	flat.WriteString("}")
	var buf bytes.Buffer
	must(json.Indent(&buf, flat.Bytes(), "", " "))
	buf.WriteString("\n")
	must(os.WriteFile(*out, buf.Bytes(), 0o644))
	fmt.Fprintf(os.Stderr, "%d vectors (%d from this converter)\n", len(kept), len(added))
}

type vector struct {
	ID     string         `json:"id"`
	File   string         `json:"file"`
	Test   string         `json:"test"`
	Table  string         `json:"table"`
	Index  int            `json:"index"`
	Line   int            `json:"line"`
	Check  string         `json:"check"`
	Input  string         `json:"input"`
	Expect map[string]any `json:"expect"`
}

func marshal(v any) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	must(enc.Encode(v))
	return bytes.TrimSpace(b.Bytes())
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// table reads `tests := []struct{...}{{k: v, ...}, ...}` in func name.
func table(fset *token.FileSet, f *ast.File, name string) []row {
	var rows []row
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != name {
			continue
		}
		ast.Inspect(fn, func(n ast.Node) bool {
			as, ok := n.(*ast.AssignStmt)
			if !ok || len(as.Lhs) != 1 || ident(as.Lhs[0]) != "tests" {
				return true
			}
			cl := as.Rhs[0].(*ast.CompositeLit)
			for i, elt := range cl.Elts {
				r := row{index: i, line: fset.Position(elt.Pos()).Line, fields: map[string]value{}}
				for _, kv := range elt.(*ast.CompositeLit).Elts {
					kv := kv.(*ast.KeyValueExpr)
					r.fields[ident(kv.Key)] = eval(kv.Value)
				}
				rows = append(rows, r)
			}
			return false
		})
	}
	if len(rows) == 0 {
		must(fmt.Errorf("%s: no table in %s", file, name))
	}
	return rows
}

// eval: string literals, `+`, strings.Repeat, and error variables by name.
func eval(e ast.Expr) value {
	switch e := e.(type) {
	case *ast.BasicLit:
		s, err := strconv.Unquote(e.Value)
		must(err)
		return value{s: s}
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			return value{s: eval(e.X).s + eval(e.Y).s}
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && ident(sel.X) == "strings" && sel.Sel.Name == "Repeat" {
			n, err := strconv.Atoi(e.Args[1].(*ast.BasicLit).Value)
			must(err)
			return value{s: strings.Repeat(eval(e.Args[0]).s, n)}
		}
	case *ast.Ident:
		return value{s: e.Name, isErr: true}
	case *ast.SelectorExpr:
		return value{s: ident(e.X) + "." + e.Sel.Name, isErr: true}
	}
	must(fmt.Errorf("unsupported expression at %v", e.Pos()))
	return value{}
}

func ident(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}
