module trainkube.local/localcluster/probe

go 1.26.0
