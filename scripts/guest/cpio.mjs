// A newc ("070701") cpio writer for the guest builder: directories, files, symlinks and device nodes, all
// owned by root with mtime 0, so the same inputs give the same bytes. Dependency-free.

import { posix } from 'node:path';

export class Cpio {
  chunks = [];
  ino = 1;
  dirs = new Set();
  /** One entry; `path` without a leading '/'. */
  add(path, mode, data = Buffer.alloc(0), rdev = [0, 0]) {
    const name = Buffer.from(`${path}\0`);
    const fields = [
      this.ino++,
      mode,
      0,
      0,
      (mode & 0o170000) === 0o040000 ? 2 : 1,
      0,
      data.length,
      0,
      0,
      rdev[0],
      rdev[1],
      name.length,
      0,
    ];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`);
    this.chunks.push(header, name, pad(header.length + name.length), data, pad(data.length));
  }
  dir(path) {
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (this.dirs.has(p)) continue;
      this.dirs.add(p);
      this.add(p, 0o040755);
    }
  }
  file(path, data, mode = 0o644) {
    this.dir(posix.dirname(path));
    this.add(path, 0o100000 | mode, data);
  }
  symlink(path, target) {
    this.dir(posix.dirname(path));
    this.add(path, 0o120777, Buffer.from(target));
  }
  done() {
    this.add('TRAILER!!!', 0);
    return Buffer.concat(this.chunks);
  }
}

function pad(n) {
  return Buffer.alloc((4 - (n % 4)) % 4);
}
