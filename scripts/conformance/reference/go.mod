module mirrorgate.invalid/scripts/conformance/reference

go 1.24
