module go-probe

go 1.24

require sluice.dev/filter v0.0.0

replace sluice.dev/filter => ../../../sdk/go
