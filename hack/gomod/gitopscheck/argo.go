package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// Argo CD runs a health.lua in gopher-lua in one of two ways: a built-in
// script (resource_customizations/<group>/<kind>/health.lua) with Lua's
// standard libraries open, or one from argocd-cm
// (resource.customizations.health.<group>_<kind>) with only package, base,
// table and a reduced os library. A script meant for both must pass in both,
// so every evaluation here runs it both ways and they must agree.
type libs struct {
	name string
	open bool
}

var argoModes = []libs{{name: "builtin", open: true}, {name: "argocd-cm", open: false}}

// Argo CD's health status codes; any other string a script returns is
// reported as Unknown.
var healthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

type health struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

func evalHealth(script string, obj map[string]any, mode libs) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !mode.open})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openClockOnlyOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return health{}, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return health{}, nil
	case lua.LTTable:
	default:
		return health{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	encoded, err := luajson.Encode(ret)
	if err != nil {
		return health{}, err
	}
	var h health
	if err := json.Unmarshal(encoded, &h); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return health{}, nil // an empty table encodes as []
		}
		return health{}, err
	}
	if !healthCodes[h.Status] {
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// openClockOnlyOs gives scripts os.time(), the part of Argo CD's reduced os
// library a health check may use to compare timestamps; nothing that touches
// the machine.
func openClockOnlyOs(l *lua.LState) int {
	mod := l.RegisterModule(lua.OsLibName, map[string]lua.LGFunction{
		"time": func(l *lua.LState) int {
			l.Push(lua.LNumber(time.Now().Unix()))
			return 1
		},
	})
	l.Push(mod)
	return 1
}

// toLua converts a decoded object into Lua values: maps to tables, lists to
// arrays, numbers to LNumber, as Argo CD hands `obj` to the script.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// evalBothWays runs the script as a built-in and as an argocd-cm
// customization and returns the verdict they agree on.
func evalBothWays(script string, u *unstructured.Unstructured) (health, error) {
	var first health
	for i, mode := range argoModes {
		h, err := evalHealth(script, u.Object, mode)
		if err != nil {
			return health{}, fmt.Errorf("%s/%s (%s): %w", u.GetNamespace(), u.GetName(), mode.name, err)
		}
		if i == 0 {
			first = h
		} else if h != first {
			return health{}, fmt.Errorf("%s/%s: %s says %+v, %s says %+v", u.GetNamespace(), u.GetName(),
				argoModes[0].name, first, mode.name, h)
		}
	}
	return first, nil
}

func runArgoHealth(scriptPath string, files []string) error {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return err
	}
	return judgeEach(files, func(u *unstructured.Unstructured) (string, string, error) {
		h, err := evalBothWays(string(script), u)
		return h.Status, h.Message, err
	})
}

// healthTests is Argo CD's health_test.yaml.
type healthTests struct {
	Tests []struct {
		HealthStatus health `json:"healthStatus"`
		InputPath    string `json:"inputPath"`
	} `json:"tests"`
}

type caseResult struct {
	InputPath string `json:"inputPath"`
	Want      health `json:"want"`
	Got       health `json:"got"`
	OK        bool   `json:"ok"`
}

// runArgoTest runs DIR/health_test.yaml against DIR/health.lua, as Argo CD's
// own test of its resource customizations does, in both library modes.
func runArgoTest(dir string) (bool, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return false, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return false, err
	}
	var suite healthTests
	if err := yaml.UnmarshalStrict(raw, &suite); err != nil {
		return false, fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(suite.Tests) == 0 {
		return false, fmt.Errorf("health_test.yaml has no tests")
	}
	allOK := true
	for _, tc := range suite.Tests {
		objs, err := readObjects([]string{filepath.Join(dir, tc.InputPath)})
		if err != nil {
			return false, err
		}
		if len(objs) != 1 {
			return false, fmt.Errorf("%s: want one object, found %d", tc.InputPath, len(objs))
		}
		got, err := evalBothWays(string(script), objs[0])
		if err != nil {
			return false, err
		}
		ok := got == tc.HealthStatus
		allOK = allOK && ok
		if err := emit(os.Stdout, caseResult{InputPath: tc.InputPath, Want: tc.HealthStatus, Got: got, OK: ok}); err != nil {
			return false, err
		}
	}
	return allOK, nil
}
