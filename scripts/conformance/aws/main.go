// Command aws converts aws/amazon-eks-pod-identity-webhook's own pkg/handler tests into
// test/conformance/aws-eks-pod-identity-webhook.json, the table mirrorgate's AWS
// conformance suite runs (test/conformance/aws.test.ts).
//
// It reads an upstream tree checked out at one commit and never downloads anything itself
// (its Go modules come from the module cache or proxy when it is built):
//
//	git -C amazon-eks-pod-identity-webhook archive c1be3015c7e6 pkg/handler | tar -x -C /tmp/upstream
//	cd scripts/conformance/aws && go run . -src /tmp/upstream -commit c1be3015c7e629cce846f14d63e77a0ac56ea3bc \
//	    -tag v0.6.17 -out ../../../test/conformance/aws-eks-pod-identity-webhook.json
//
// What it converts, as the upstream tests do it:
//   - TestUpdatePodSpec (handler_pod_test.go) walks pkg/handler/testdata: each pod YAML is
//     decoded into corev1.Pod, given namespace and ServiceAccount "default", and its
//     testing.eks.amazonaws.com/* annotations become the ServiceAccount annotations
//     (buildFakeCacheFromPod), the webhook flags (buildModifierFromPod) and the expected
//     patch. The expected final pod is that patch applied to the decoded pod with
//     evanphx/json-patch (what kube-apiserver applies), then decoded into corev1.Pod and
//     encoded again, as kube-apiserver stores it.
//   - TestMutatePod, TestMutatePod_MutationNotNeeded and TestModifierHandler
//     (handler_test.go) are read with go/ast: their ServiceAccount annotations, their
//     case tables (name, input, expected answer) and the byte literals they use.
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
	"sort"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const repository = "aws/amazon-eks-pod-identity-webhook"

// Annotation names of handler_pod_test.go.
const (
	testingPrefix        = "testing.eks.amazonaws.com/"
	skipAnn              = "testing.eks.amazonaws.com/skip"
	expectedPatchAnn     = "testing.eks.amazonaws.com/expectedPatch"
	roleArnAnn           = "testing.eks.amazonaws.com/serviceAccount/roleArn"
	audienceAnn          = "testing.eks.amazonaws.com/serviceAccount/audience"
	saSTSAnn             = "testing.eks.amazonaws.com/serviceAccount/sts-regional-endpoints"
	saExpirationAnn      = "testing.eks.amazonaws.com/serviceAccount/token-expiration"
	ccURIAnn             = "testing.eks.amazonaws.com/containercredentials/uri"
	ccAudienceAnn        = "testing.eks.amazonaws.com/containercredentials/audience"
	ccMountPathAnn       = "testing.eks.amazonaws.com/containercredentials/mountPath"
	ccVolumeNameAnn      = "testing.eks.amazonaws.com/containercredentials/volumeName"
	ccTokenPathAnn       = "testing.eks.amazonaws.com/containercredentials/tokenPath"
	handlerMountPathAnn  = "testing.eks.amazonaws.com/handler/mountPath"
	handlerExpirationAnn = "testing.eks.amazonaws.com/handler/expiration"
	handlerRegionAnn     = "testing.eks.amazonaws.com/handler/region"
	handlerSTSAnn        = "testing.eks.amazonaws.com/handler/injectSTS"
)

type serviceAccount struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Annotations map[string]string `json:"annotations"`
}

// webhook holds the upstream Modifier options a case sets (its command-line flags).
type webhook struct {
	Region               string            `json:"region,omitempty"`
	MountPath            string            `json:"mountPath,omitempty"`
	ContainerCredentials map[string]string `json:"containerCredentials,omitempty"`
}

type expect struct {
	// patched: the answer carries a patch giving expectedPod; unchanged: allowed, no
	// patch; denied: allowed false with message; httpError: not an AdmissionReview answer.
	Answer      string          `json:"answer"`
	Patch       json.RawMessage `json:"patch,omitempty"`
	ExpectedPod json.RawMessage `json:"expectedPod,omitempty"`
	Message     string          `json:"message,omitempty"`
	Text        string          `json:"text,omitempty"`
}

type testCase struct {
	ID             string          `json:"id"`
	File           string          `json:"file"`
	Test           string          `json:"test"`
	Line           int             `json:"line,omitempty"`
	Pod            json.RawMessage `json:"pod,omitempty"`
	Namespace      string          `json:"namespace,omitempty"`
	ServiceAccount *serviceAccount `json:"serviceAccount"`
	Webhook        webhook         `json:"webhook"`
	// For TestModifierHandler/TestMutatePod cases that are not a pod: the body as sent.
	ContentType string  `json:"contentType,omitempty"`
	Body        *string `json:"body,omitempty"`
	Expect      expect  `json:"expect"`
}

type output struct {
	Upstream struct {
		Repository string   `json:"repository"`
		Commit     string   `json:"commit"`
		Tag        string   `json:"tag"`
		Files      []string `json:"files"`
	} `json:"upstream"`
	About        string            `json:"about"`
	Generator    string            `json:"generator"`
	NotConverted map[string]string `json:"notConverted"`
	Cases        []testCase        `json:"cases"`
}

func main() {
	src := flag.String("src", "", "upstream tree at the commit")
	commit := flag.String("commit", "", "the commit the tree is at (40 hex digits)")
	tag := flag.String("tag", "", "the release tag of that commit")
	out := flag.String("out", "", "output JSON file")
	flag.Parse()
	if *src == "" || len(*commit) != 40 || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: aws -src DIR -commit SHA -tag TAG -out FILE")
		os.Exit(2)
	}
	var o output
	o.Upstream.Repository = repository
	o.Upstream.Commit = *commit
	o.Upstream.Tag = *tag
	o.About = "aws/amazon-eks-pod-identity-webhook's own pkg/handler tests at the commit above, converted by scripts/conformance/aws: " +
		"pod fixtures of TestUpdatePodSpec with the ServiceAccount annotations and webhook flags the test derives from them, and the case tables of handler_test.go. " +
		"expectedPod is the upstream expected patch applied to the pod as kube-apiserver applies and stores it."
	o.Generator = "scripts/conformance/aws"
	o.NotConverted = map[string]string{
		"shutdown_test.go TestShutdownFromContext_SuccessfulGracefulShutdown": "the Go HTTP server's shutdown, not a pod: mirrorgate's drain has its own test (test/server/drain.test.ts)",
		"shutdown_test.go TestShutdownFromContext_GracefulShutdownTimeout":    "the same",
	}

	fixtures, files := convertFixtures(*src)
	handlerCases := convertHandlerTests(*src)
	o.Cases = append(fixtures, handlerCases...)
	o.Upstream.Files = append([]string{"pkg/handler/handler_pod_test.go", "pkg/handler/handler_test.go"}, files...)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	must(enc.Encode(o))
	must(os.WriteFile(*out, buf.Bytes(), 0o644))
	fmt.Fprintf(os.Stderr, "%d cases (%d fixtures, %d from handler_test.go)\n", len(o.Cases), len(fixtures), len(handlerCases))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// convertFixtures follows TestUpdatePodSpec: filepath.Walk over ./testdata (lexical order).
func convertFixtures(src string) ([]testCase, []string) {
	root := filepath.Join(src, "pkg", "handler")
	var cases []testCase
	var files []string
	must(filepath.Walk(filepath.Join(root, "testdata"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		files = append(files, rel)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pod := &corev1.Pod{}
		if err := yaml.Unmarshal(data, pod); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if skip, ok := pod.Annotations[skipAnn]; ok {
			if b, _ := strconv.ParseBool(skip); b {
				return nil
			}
		}
		pod.Namespace = "default"
		pod.Spec.ServiceAccountName = "default"
		ann := pod.Annotations

		// buildFakeCacheFromPod
		sa := &serviceAccount{Namespace: "default", Name: "default", Annotations: map[string]string{}}
		if v, ok := ann[roleArnAnn]; ok {
			sa.Annotations["eks.amazonaws.com/role-arn"] = v
		}
		if v, ok := ann[audienceAnn]; ok {
			sa.Annotations["eks.amazonaws.com/audience"] = v
		}
		for _, k := range []string{saSTSAnn, handlerSTSAnn} {
			if v, ok := ann[k]; ok {
				sa.Annotations["eks.amazonaws.com/sts-regional-endpoints"] = v
				break
			}
		}
		for _, k := range []string{saExpirationAnn, handlerExpirationAnn} {
			if v, ok := ann[k]; ok {
				sa.Annotations["eks.amazonaws.com/token-expiration"] = v
				break
			}
		}
		// buildModifierFromPod / buildFakeConfigFromPod
		var wh webhook
		wh.MountPath = ann[handlerMountPathAnn]
		wh.Region = ann[handlerRegionAnn]
		if uri := ann[ccURIAnn]; uri != "" {
			wh.ContainerCredentials = map[string]string{
				"fullUri": uri, "audience": ann[ccAudienceAnn], "mountPath": ann[ccMountPathAnn],
				"volumeName": ann[ccVolumeNameAnn], "tokenPath": ann[ccTokenPathAnn],
			}
		}
		expectedPatch, ok := ann[expectedPatchAnn]
		if !ok {
			return fmt.Errorf("%s: no expected patch", rel)
		}

		raw, err := json.Marshal(pod)
		if err != nil {
			return err
		}
		patch, err := jsonpatch.DecodePatch([]byte(expectedPatch))
		if err != nil {
			return fmt.Errorf("%s: expected patch: %w", rel, err)
		}
		patched, err := patch.Apply(raw)
		if err != nil {
			return fmt.Errorf("%s: applying the expected patch: %w", rel, err)
		}
		final := &corev1.Pod{}
		if err := json.Unmarshal(patched, final); err != nil {
			return fmt.Errorf("%s: patched pod: %w", rel, err)
		}
		// The test's own annotations are setup, not part of the pod under test.
		input := pod.DeepCopy()
		stripTesting(input)
		stripTesting(final)
		in, err := json.Marshal(input)
		if err != nil {
			return err
		}
		fin, err := json.Marshal(final)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(strings.TrimPrefix(rel, "pkg/handler/testdata/"))
		cases = append(cases, testCase{
			ID:             "TestUpdatePodSpec/" + name,
			File:           filepath.ToSlash(rel),
			Test:           "TestUpdatePodSpec",
			Pod:            in,
			Namespace:      "default",
			ServiceAccount: sa,
			Webhook:        wh,
			Expect:         expect{Answer: "patched", Patch: json.RawMessage(expectedPatch), ExpectedPod: fin},
		})
		return nil
	}))
	return cases, files
}

func stripTesting(p *corev1.Pod) {
	for k := range p.Annotations {
		if strings.HasPrefix(k, testingPrefix) {
			delete(p.Annotations, k)
		}
	}
	if len(p.Annotations) == 0 {
		p.Annotations = nil
	}
}

// handler_test.go

type goFile struct {
	fset  *token.FileSet
	file  *ast.File
	bytes map[string]string // var name = []byte(`...`)
	funcs map[string]*ast.FuncDecl
}

func convertHandlerTests(src string) []testCase {
	const rel = "pkg/handler/handler_test.go"
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join(src, rel), nil, 0)
	must(err)
	g := &goFile{fset: fset, file: f, bytes: map[string]string{}, funcs: map[string]*ast.FuncDecl{}}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			g.funcs[d.Name.Name] = d
		case *ast.GenDecl:
			for _, s := range d.Specs {
				vs, ok := s.(*ast.ValueSpec)
				if !ok || len(vs.Values) != 1 {
					continue
				}
				if lit, ok := byteLiteral(vs.Values[0]); ok {
					g.bytes[vs.Names[0].Name] = lit
				}
			}
		}
	}
	// getValidHandlerResponse's Patch field names the expected patch.
	validPatch := ""
	ast.Inspect(g.funcs["getValidHandlerResponse"], func(n ast.Node) bool {
		if kv, ok := n.(*ast.KeyValueExpr); ok && identName(kv.Key) == "Patch" {
			validPatch = g.bytes[identName(kv.Value)]
		}
		return true
	})
	if validPatch == "" {
		must(fmt.Errorf("%s: getValidHandlerResponse has no Patch", rel))
	}

	var names []string
	for n := range g.funcs {
		if strings.HasPrefix(n, "Test") {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return g.funcs[names[i]].Pos() < g.funcs[names[j]].Pos() })

	var cases []testCase
	for _, name := range names {
		fn := g.funcs[name]
		sa := saOf(fn)
		table := casesTable(fn)
		if table == nil {
			// TestMutatePod_MutationNotNeeded: one MutatePod call and assertions on it.
			c := g.singleCase(rel, name, fn, sa)
			if c != nil {
				cases = append(cases, *c)
			}
			continue
		}
		for _, elt := range table.Elts {
			cl, ok := elt.(*ast.CompositeLit)
			if !ok || len(cl.Elts) < 3 {
				continue
			}
			caseName, _ := strconv.Unquote(cl.Elts[0].(*ast.BasicLit).Value)
			c := testCase{
				ID:             name + "/" + caseName,
				File:           rel,
				Test:           name,
				Line:           fset.Position(cl.Pos()).Line,
				Namespace:      "default",
				ServiceAccount: sa,
			}
			g.input(&c, cl.Elts[1])
			wantExpr := cl.Elts[len(cl.Elts)-1]
			if len(cl.Elts) == 4 {
				ct, _ := strconv.Unquote(cl.Elts[2].(*ast.BasicLit).Value)
				c.ContentType = ct
			}
			c.Expect = g.want(wantExpr, validPatch)
			if c.Expect.Answer == "patched" {
				c.Expect.ExpectedPod = applyTo(c.Pod, c.Expect.Patch)
			}
			cases = append(cases, c)
		}
	}
	return cases
}

func (g *goFile) singleCase(rel, name string, fn *ast.FuncDecl, sa *serviceAccount) *testCase {
	var call *ast.CallExpr
	ast.Inspect(fn, func(n ast.Node) bool {
		if ce, ok := n.(*ast.CallExpr); ok && selName(ce.Fun) == "MutatePod" {
			call = ce
		}
		return true
	})
	if call == nil {
		return nil
	}
	c := &testCase{ID: name, File: rel, Test: name, Line: g.fset.Position(call.Pos()).Line, Namespace: "default", ServiceAccount: sa}
	g.input(c, call.Args[0])
	// assert.True(t, response.Allowed) and assert.Nil(t, response.Patch): admitted unchanged.
	allowed, noPatch := false, false
	ast.Inspect(fn, func(n ast.Node) bool {
		if ce, ok := n.(*ast.CallExpr); ok && len(ce.Args) == 2 {
			field := selName(ce.Args[1])
			switch selName(ce.Fun) {
			case "True":
				allowed = allowed || field == "Allowed"
			case "Nil":
				noPatch = noPatch || field == "Patch"
			}
		}
		return true
	})
	if !allowed || !noPatch {
		must(fmt.Errorf("%s %s: unrecognised assertions", rel, name))
	}
	c.Expect = expect{Answer: "unchanged"}
	return c
}

// input records what a case sends: a pod review, a raw body, or nothing.
func (g *goFile) input(c *testCase, e ast.Expr) {
	if identName(e) == "nil" {
		// http.Post with a nil body (TestModifierHandler), or MutatePod(nil): nothing sent.
		empty := ""
		c.Body = &empty
		return
	}
	if call, ok := e.(*ast.CallExpr); ok {
		switch identName(call.Fun) {
		case "serializeAdmissionReview":
			g.input(c, call.Args[1])
			return
		case "getValidReview":
			c.Pod = canonical(g.bytes[identName(call.Args[0])])
			return
		}
	}
	if lit, ok := byteLiteral(e); ok {
		c.Body = &lit
		return
	}
	// &v1beta1.AdmissionReview{Request: nil}: a review without a request, as JSON "{}".
	if u, ok := e.(*ast.UnaryExpr); ok {
		if cl, ok := u.X.(*ast.CompositeLit); ok && selName(cl.Type) == "AdmissionReview" {
			body := "{}"
			c.Body = &body
			return
		}
	}
	must(fmt.Errorf("%s: unrecognised input at line %d", c.ID, g.fset.Position(e.Pos()).Line))
}

func (g *goFile) want(e ast.Expr, validPatch string) expect {
	uses := func(fn string) bool {
		found := false
		ast.Inspect(e, func(n ast.Node) bool {
			if ce, ok := n.(*ast.CallExpr); ok && identName(ce.Fun) == fn {
				found = true
			}
			return true
		})
		return found
	}
	if uses("getValidHandlerResponse") {
		return expect{Answer: "patched", Patch: json.RawMessage(validPatch)}
	}
	if lit, ok := byteLiteral(e); ok {
		var review struct {
			Response *struct {
				Allowed bool `json:"allowed"`
				Status  struct {
					Message string `json:"message"`
				} `json:"status"`
			} `json:"response"`
		}
		if json.Unmarshal([]byte(lit), &review) == nil && review.Response != nil && !review.Response.Allowed {
			return expect{Answer: "denied", Message: review.Response.Status.Message}
		}
		return expect{Answer: "httpError", Text: lit}
	}
	msg := ""
	ast.Inspect(e, func(n ast.Node) bool {
		if kv, ok := n.(*ast.KeyValueExpr); ok && identName(kv.Key) == "Message" {
			msg, _ = strconv.Unquote(kv.Value.(*ast.BasicLit).Value)
		}
		return true
	})
	if msg != "" {
		return expect{Answer: "denied", Message: msg}
	}
	must(fmt.Errorf("unrecognised expectation at line %d", g.fset.Position(e.Pos()).Line))
	return expect{}
}

// saOf reads `testServiceAccount.Annotations = map[string]string{...}`; no ServiceAccount
// (an empty FakeServiceAccountCache) when the test sets none.
func saOf(fn *ast.FuncDecl) *serviceAccount {
	var sa *serviceAccount
	ast.Inspect(fn, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Lhs) != 1 || selName(as.Lhs[0]) != "Annotations" {
			return true
		}
		cl, ok := as.Rhs[0].(*ast.CompositeLit)
		if !ok {
			return true
		}
		sa = &serviceAccount{Namespace: "default", Name: "default", Annotations: map[string]string{}}
		for _, elt := range cl.Elts {
			kv := elt.(*ast.KeyValueExpr)
			k, _ := strconv.Unquote(kv.Key.(*ast.BasicLit).Value)
			v, _ := strconv.Unquote(kv.Value.(*ast.BasicLit).Value)
			sa.Annotations[k] = v
		}
		return true
	})
	return sa
}

// casesTable finds `cases := []struct{...}{...}`.
func casesTable(fn *ast.FuncDecl) *ast.CompositeLit {
	var table *ast.CompositeLit
	ast.Inspect(fn, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if ok && len(as.Lhs) == 1 && identName(as.Lhs[0]) == "cases" {
			table, _ = as.Rhs[0].(*ast.CompositeLit)
		}
		return true
	})
	return table
}

func byteLiteral(e ast.Expr) (string, bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 1 {
		return "", false
	}
	if at, ok := call.Fun.(*ast.ArrayType); !ok || identName(at.Elt) != "byte" {
		return "", false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

func selName(e ast.Expr) string {
	if se, ok := e.(*ast.SelectorExpr); ok {
		return se.Sel.Name
	}
	return identName(e)
}

// canonical is a pod as the webhook sees it: decoded into corev1.Pod and encoded again.
func canonical(s string) json.RawMessage {
	p := &corev1.Pod{}
	must(json.Unmarshal([]byte(s), p))
	out, err := json.Marshal(p)
	must(err)
	return out
}

// applyTo applies an expected patch to a pod as TestUpdatePodSpec's fixtures are: with
// evanphx/json-patch, the result decoded into corev1.Pod and encoded again.
func applyTo(pod json.RawMessage, patch json.RawMessage) json.RawMessage {
	p := &corev1.Pod{}
	must(json.Unmarshal(pod, p))
	raw, err := json.Marshal(p)
	must(err)
	jp, err := jsonpatch.DecodePatch(patch)
	must(err)
	patched, err := jp.Apply(raw)
	must(err)
	final := &corev1.Pod{}
	must(json.Unmarshal(patched, final))
	out, err := json.Marshal(final)
	must(err)
	return out
}
