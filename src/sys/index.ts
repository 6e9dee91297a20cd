/** The FFI layer: libc through koffi. Nothing above src/sys imports koffi. */
export * from './libc.js';
