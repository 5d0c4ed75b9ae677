;; ~/.emacs.d/init.el (Eglot: built into Emacs 29+, from GNU ELPA before)
(with-eval-after-load 'eglot
  (add-to-list 'eglot-server-programs
               '((python-mode python-ts-mode)
                 . ("exlsp" "serve"
                    :initializationOptions (:completion (:fallback "on"))))))
;; then M-x eglot in a Python buffer, or: (add-hook 'python-mode-hook #'eglot-ensure)
