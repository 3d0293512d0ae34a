package argocd

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// healthTests is a health_test.yaml, in Argo CD's format.
type healthTests struct {
	Tests []struct {
		HealthStatus Health `json:"healthStatus"`
		InputPath    string `json:"inputPath"`
	} `json:"tests"`
}

func readHealthTests(t *testing.T, path string) healthTests {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tests healthTests
	if err := yaml.UnmarshalStrict(data, &tests); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return tests
}

// healthTestFiles are charts/trainkube/argocd/<group>/<Kind>/health_test.yaml, sorted.
func healthTestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Dir, "*", "*", "health_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func TestEveryKindHasAHealthCheckWithTests(t *testing.T) {
	for _, kind := range Kinds {
		if _, err := os.Stat(HealthPath(kind)); err != nil {
			t.Errorf("%s has no health check: %v", kind, err)
		}
		tests := filepath.Join(filepath.Dir(HealthPath(kind)), "health_test.yaml")
		if _, err := os.Stat(tests); err != nil {
			t.Errorf("%s has no health_test.yaml: %v", kind, err)
			continue
		}
		if n := len(readHealthTests(t, tests).Tests); n == 0 {
			t.Errorf("%s lists no tests", tests)
		}
	}
	if got := len(healthTestFiles(t)); got != len(Kinds) {
		t.Errorf("found %d health_test.yaml files, want one for each of the %d kinds", got, len(Kinds))
	}
}

func TestGeneratedFilesAreInSyncWithHealthSourceLua(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range files {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (run `go generate` in tests/argocd)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what health.source.lua generates: run `go generate` in tests/argocd", path)
		}
	}
}

func TestArgoCMPatchHoldsEachKindsHealthCheck(t *testing.T) {
	var patch struct {
		Data map[string]string `json:"data"`
	}
	data, err := os.ReadFile(filepath.Join(Dir, patchFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &patch); err != nil {
		t.Fatal(err)
	}
	if len(patch.Data) != len(Kinds) {
		t.Errorf("the patch has %d keys, want %d", len(patch.Data), len(Kinds))
	}
	for _, kind := range Kinds {
		script, err := os.ReadFile(HealthPath(kind))
		if err != nil {
			t.Fatal(err)
		}
		key := "resource.customizations.health." + Group + "_" + kind
		if patch.Data[key] != string(script) {
			t.Errorf("%s is not %s", key, HealthPath(kind))
		}
	}
}

func TestReadmeSnippetHoldsTheHealthCheckForEveryTrainkubeKind(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(Dir, readmeFile))
	if err != nil {
		t.Fatal(err)
	}
	found := regexp.MustCompile("(?s)" + regexp.QuoteMeta(snippetBegin) + "\n```yaml\n(.*?)```\n").
		FindSubmatch(readme)
	if found == nil {
		t.Fatal("no generated snippet in the README")
	}
	var configMap struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(found[1], &configMap); err != nil {
		t.Fatal(err)
	}
	var customizations map[string]map[string]string
	if err := yaml.UnmarshalStrict([]byte(configMap.Data["resource.customizations"]), &customizations); err != nil {
		t.Fatal(err)
	}
	source, err := os.ReadFile(filepath.Join(Dir, sourceFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := customizations[Group+"/*"]["health.lua"]; got != string(source) {
		t.Errorf("the README's %s/* health.lua is not %s:\n%s", Group, sourceFile, got)
	}
}

// luaCode is a line of Lua without its comment (the scripts have no "--" inside strings).
func luaCode(line string) string {
	if i := strings.Index(line, "--"); i >= 0 {
		return line[:i]
	}
	return line
}

func TestHealthSourceLuaCallsNoLibraryArgoCMLeavesClosed(t *testing.T) {
	source, err := os.ReadFile(filepath.Join(Dir, sourceFile))
	if err != nil {
		t.Fatal(err)
	}
	// string.x, math.x, os.x, io.x, debug.x, and s:method(...) (string methods need the string library).
	closed := regexp.MustCompile(`\b(string|math|os|io|debug|coroutine|channel)\.|[\w\)\]"]:\w+\s*\(`)
	for number, line := range strings.Split(string(source), "\n") {
		if use := closed.FindString(luaCode(line)); use != "" {
			t.Errorf("%s:%d uses %q, which argocd-cm scripts do not get: %s", sourceFile, number+1, use, line)
		}
	}
}

func TestTestdataAreObjectsOfTheirKindAndEachIsTested(t *testing.T) {
	for _, testsPath := range healthTestFiles(t) {
		dir := filepath.Dir(testsPath)
		kind, group := filepath.Base(dir), filepath.Base(filepath.Dir(dir))
		used := map[string]bool{}
		for _, test := range readHealthTests(t, testsPath).Tests {
			path := filepath.Join(dir, test.InputPath)
			used[filepath.Clean(path)] = true
			object, err := LoadObject(path)
			if err != nil {
				t.Error(err)
				continue
			}
			if object["apiVersion"] != group+"/v1alpha1" || object["kind"] != kind {
				t.Errorf("%s is a %v %v, not a %s/v1alpha1 %s", path, object["apiVersion"], object["kind"], group, kind)
			}
		}
		files, err := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			if !used[filepath.Clean(file)] {
				t.Errorf("%s is in no test of %s", file, testsPath)
			}
		}
	}
}

// TestHealthChecks runs every case of every health_test.yaml, with the libraries a script from
// argocd-cm gets and with all of them (useOpenLibs, or a built-in check): status and message must
// be exactly as expected in both.
func TestHealthChecks(t *testing.T) {
	for _, testsPath := range healthTestFiles(t) {
		dir := filepath.Dir(testsPath)
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(Dir, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, test := range readHealthTests(t, testsPath).Tests {
			object, err := LoadObject(filepath.Join(dir, test.InputPath))
			if err != nil {
				t.Error(err)
				continue
			}
			for _, libraries := range []Libraries{ArgoCMLibraries, OpenLibraries} {
				name := filepath.ToSlash(filepath.Join(rel, test.InputPath)) + "/" + string(libraries)
				t.Run(name, func(t *testing.T) {
					got, err := Run(string(script), object, libraries)
					if err != nil {
						t.Fatal(err)
					}
					if got != test.HealthStatus {
						t.Errorf("got\n  status:  %s\n  message: %s\nwant\n  status:  %s\n  message: %s",
							got.Status, got.Message, test.HealthStatus.Status, test.HealthStatus.Message)
					}
				})
			}
		}
	}
}
